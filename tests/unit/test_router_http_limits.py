"""corral.router.http.Server's limits over real 127.0.0.1 sockets: head size (431/414), head and
body read timeouts (408), pipelining (answers never interleave; the queue is bounded), hostile
framing (CL+TE, bad chunk sizes), the connection cap, and drain."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from corral.httpserver import Limits
from corral.router.http import Connection, Handler, Reply, Request, Server
from support import free_port

STREAM_PIECES = [b"data: %d\n\n" % i for i in range(3)]


class App:
    """Handlers: /ok answers at once; /stream streams three pieces 50 ms apart; /hold waits
    for ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = 0

    async def ok(self, req: Request, conn: Connection) -> Reply:
        return Reply(200, b'{"len": %d}' % len(req.body))

    async def stream(self, req: Request, conn: Connection) -> None:
        conn.stream_start(200, b"text/event-stream", b"", STREAM_PIECES[0])
        for piece in STREAM_PIECES[1:]:
            await asyncio.sleep(0.05)
            conn.stream_write(piece)
        conn.stream_end()

    async def hold(self, req: Request, conn: Connection) -> Reply:
        self.holding += 1
        await self.release.wait()
        return Reply(200, b"{}")

    def dispatch(self, req: Request) -> Handler | None:
        return {"/ok": self.ok, "/stream": self.stream, "/hold": self.hold}.get(req.path)


Make = Callable[..., Awaitable[tuple[Server, int, App]]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    servers: list[Server] = []

    async def start(max_connections: int = 0, **limits: float) -> tuple[Server, int, App]:
        app = App()
        port = free_port()
        srv = Server(app.dispatch, lambda: "gen-1", Limits(**limits), max_connections)  # type: ignore[arg-type]
        await srv.start("127.0.0.1", port)
        servers.append(srv)
        return srv, port, app

    yield start
    for srv in servers:
        await srv.close()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, limit=4 * 1024 * 1024)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one response, chunked or with Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)).strip(), 16)
            data = await asyncio.wait_for(reader.readexactly(size + 2), 10)
            if size == 0:
                return head, body
            body += data[:-2]
    length = int(lower.split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


async def assert_error_then_close(reader: asyncio.StreamReader, status: int, code: str | None) -> None:
    head, body = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 %d" % status), head
    err = json.loads(body)["error"]
    assert err["message"] and err["type"]
    if code is not None:
        assert err["code"] == code
    assert await asyncio.wait_for(reader.read(), 10) == b""  # and the connection closes


def post(path: bytes, body: bytes = b"", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (path, len(body), extra, body)


async def test_a_head_past_the_limit_is_431(make: Make) -> None:
    _, port, _ = await make(max_head=4096)
    reader, writer = await connect(port)
    writer.write(post(b"/ok", extra=b"X-Big: " + b"a" * 8192 + b"\r\n"))
    await assert_error_then_close(reader, 431, "request_header_too_large")
    writer.close()


async def test_a_one_mib_header_is_refused_before_it_is_all_read(make: Make) -> None:
    _, port, _ = await make(max_head=16 * 1024)
    reader, writer = await connect(port)
    writer.write(b"POST /ok HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        while sent < 1024 * 1024:  # never ends the header: the server must not wait for it
            writer.write(b"a" * 16384)
            await writer.drain()
            sent += 16384
            await asyncio.sleep(0)
    except ConnectionError:
        pass
    await assert_error_then_close(reader, 431, "request_header_too_large")
    writer.close()


async def test_a_url_past_the_limit_is_414(make: Make) -> None:
    _, port, _ = await make(max_head=4096)
    reader, writer = await connect(port)
    writer.write(post(b"/ok?q=" + b"a" * 8192))
    await assert_error_then_close(reader, 414, "request_uri_too_long")
    writer.close()


async def test_a_trickled_head_times_out_with_408(make: Make) -> None:
    _, port, _ = await make(head_timeout=0.3)
    reader, writer = await connect(port)
    writer.write(b"POST /ok HTTP/1.1\r\n")
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def trickle() -> None:  # a byte every 50 ms keeps any per-read timer happy
        try:
            for _ in range(200):
                writer.write(b"X-A: b\r\n")
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass

    task = asyncio.create_task(trickle())
    await assert_error_then_close(reader, 408, "request_timeout")
    assert loop.time() - t0 < 5
    task.cancel()
    writer.close()


async def test_a_stalled_body_times_out_with_408(make: Make) -> None:
    _, port, _ = await make(body_timeout=0.3)
    reader, writer = await connect(port)
    writer.write(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    await assert_error_then_close(reader, 408, "request_timeout")
    writer.close()


async def test_a_silent_connection_is_closed(make: Make) -> None:
    srv, port, _ = await make(head_timeout=0.3)
    reader, writer = await connect(port)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert not srv.connections
    writer.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n",
        b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /ok HTTP/9.9\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    ],
    ids=["cl+te", "bad-chunk-size", "huge-chunk-size", "two-lengths", "negative-length", "version", "tls"],
)
async def test_hostile_framing_is_400_with_an_openai_body(make: Make, raw: bytes) -> None:
    _, port, _ = await make()
    reader, writer = await connect(port)
    writer.write(raw)
    await assert_error_then_close(reader, 400, None)
    writer.close()


async def test_413_waits_until_the_pipelined_stream_before_it_ended(make: Make) -> None:
    _, port, _ = await make(max_body=100)
    reader, writer = await connect(port)
    writer.write(post(b"/stream") + post(b"/ok", b"x" * 200))
    head, body = await read_response(reader)  # the whole stream comes first, unbroken
    assert head.startswith(b"HTTP/1.1 200") and body == b"".join(STREAM_PIECES)
    await assert_error_then_close(reader, 413, "request_too_large")
    writer.close()


async def test_100_continue_waits_until_the_pipelined_stream_before_it_ended(make: Make) -> None:
    _, port, _ = await make()
    reader, writer = await connect(port)
    expect = b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    writer.write(post(b"/stream") + expect)
    head, body = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 200") and body == b"".join(STREAM_PIECES)
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"abc")
    head, body = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 200") and body == b'{"len": 3}'
    writer.close()


async def test_the_pipelining_queue_is_bounded_and_reading_pauses(make: Make) -> None:
    srv, port, app = await make(max_queued=2)
    reader, writer = await connect(port)
    writer.write(post(b"/hold"))
    for _ in range(50):
        await asyncio.sleep(0.01)
        if app.holding:
            break
    conn = next(iter(srv.connections))
    for _ in range(8):  # one request per write, so each read holds one
        writer.write(post(b"/ok"))
        await writer.drain()
        for _ in range(20):
            if len(conn.queue) >= 2:
                break
            await asyncio.sleep(0.01)
    assert len(conn.queue) == 2  # the rest waits in the socket, unread
    assert conn.transport is not None and not conn.transport.is_reading()
    app.release.set()
    for _ in range(9):  # all answered, in order, once the first one finished
        head, _body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_connections_past_the_cap_get_503(make: Make) -> None:
    _, port, _ = await make(max_connections=1)
    r1, w1 = await connect(port)
    w1.write(post(b"/ok"))
    head, _ = await read_response(r1)
    assert head.startswith(b"HTTP/1.1 200")
    r2, w2 = await connect(port)
    await assert_error_then_close(r2, 503, "too_many_connections")
    w1.close()
    w2.close()


async def test_drain_finishes_in_flight_requests_and_refuses_new_ones(make: Make) -> None:
    srv, port, app = await make()
    reader, writer = await connect(port)
    writer.write(post(b"/hold"))
    idle_r, idle_w = await connect(port)
    for _ in range(100):
        if app.holding and len(srv.connections) == 2:
            break
        await asyncio.sleep(0.01)
    drain = asyncio.create_task(srv.drain(10))
    await asyncio.sleep(0.05)
    assert await asyncio.wait_for(idle_r.read(), 10) == b""  # the idle connection was closed
    with pytest.raises(OSError):
        await connect(port)  # no longer accepting
    app.release.set()
    head, _ = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    assert await asyncio.wait_for(drain, 10) is True
    writer.close()
    idle_w.close()
