"""The router's upstream client against a scripted HTTP server on a real 127.0.0.1 socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from corral.router.upstream import ConnectError, Timeouts, Upstream, UpstreamClosed, UpstreamTimeout
from support import free_port

T = Timeouts(connect=3, read=10, total=None)
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


class Backend:
    """Answers by path: /ok, /big (1 MiB), /sse (two chunks), /drop (drop the next request on this
    connection), /slow (headers, then silence), /stall (headers and one chunk, then silence)."""

    def __init__(self) -> None:
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        drop_next = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next(
                    (
                        int(h.split(b":")[1])
                        for h in head.split(b"\r\n")
                        if h.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                if drop_next:
                    return  # closes without a byte of answer, like a keep-alive timeout race
                path = head.split(b" ")[1]
                if path == b"/ok":
                    writer.write(OK)
                elif path == b"/drop":
                    writer.write(OK)
                    drop_next = True
                elif path == b"/big":  # 1 MiB, four times the reader's pause threshold
                    big = b'{"data":"' + b"x" * (1024 * 1024) + b'"}'
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big))
                elif path == b"/sse":
                    writer.write(SSE_HEAD)
                    for piece in (b"data: 1\n\n", b"data: 2\n\n"):
                        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        await writer.drain()
                        await asyncio.sleep(0.01)
                    writer.write(b"0\r\n\r\n")
                elif path == b"/stall":
                    writer.write(SSE_HEAD + b"9\r\ndata: 1\n\n\r\n")
                    await writer.drain()
                    await reader.read()  # one token, then silent with the connection open
                elif path == b"/slow":
                    writer.write(SSE_HEAD)
                    await writer.drain()
                    await reader.read()  # silent until the client gives up and closes
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    b.server = await asyncio.start_server(b.handle, "127.0.0.1", 0)
    b.url = f"http://127.0.0.1:{b.server.sockets[0].getsockname()[1]}"
    yield b
    b.server.close()


def head(up: Upstream, url: str, path: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nContent-Length: %d\r\n" % (path.encode(), len(body)) + up.host_header(url)


async def test_keep_alive_reuses_one_connection(backend: Backend) -> None:
    up = Upstream()
    for _ in range(3):
        r = await up.request(backend.url, head(up, backend.url, "/ok", b"{}"), b"{}", T)
        assert (r.status, r.content_type) == (200, b"application/json")
        assert await r.read() == b'{"ok":true}'
        r.release()
    assert backend.connections == 1
    assert backend.heads[0].startswith(b"POST /ok HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in backend.heads[0]
    up.close()


async def test_a_non_streamed_body_past_the_pause_threshold_is_read_whole(backend: Backend) -> None:
    """The reader paused at 256 KiB and nothing resumed it: read() hung until the read timeout."""
    up = Upstream()
    r = await up.request(backend.url, head(up, backend.url, "/big", b""), b"", Timeouts(3, 5, None))
    body = await asyncio.wait_for(r.read(), 10)
    assert len(body) == 1024 * 1024 + 11
    r.release()
    up.close()


async def test_stream_pieces_then_end(backend: Backend) -> None:
    up = Upstream()
    r = await up.request(backend.url, head(up, backend.url, "/sse", b""), b"", T)
    assert r.content_type == b"text/event-stream"
    got = b""
    while piece := await r.readany():
        got += piece
    assert got == b"data: 1\n\ndata: 2\n\n"
    r.release()
    up.close()


async def test_a_pooled_connection_dropped_by_the_backend_is_replaced(backend: Backend) -> None:
    up = Upstream()
    r = await up.request(backend.url, head(up, backend.url, "/drop", b""), b"", T)
    assert await r.read() == b'{"ok":true}'
    r.release()
    r = await up.request(backend.url, head(up, backend.url, "/ok", b""), b"", T)
    assert await r.read() == b'{"ok":true}'
    r.release()
    assert backend.connections == 2
    up.close()


async def test_read_timeout_between_chunks(backend: Backend) -> None:
    up = Upstream()
    r = await up.request(backend.url, head(up, backend.url, "/slow", b""), b"", Timeouts(3, 0.2, None))
    with pytest.raises(UpstreamTimeout):
        await r.readany()
    r.release()
    up.close()


@pytest.mark.parametrize(
    ("path", "timeouts", "phase"),
    [
        ("/slow", Timeouts(3, 10, None, first=0.2), "first_token"),
        # The first chunk shortens the armed 10 s first-token timer to the 0.2 s inter-token one.
        ("/stall", Timeouts(3, 0.2, None, first=10), "inter_token"),
        ("/slow", Timeouts(3, 10, 0.3, first=10), "response"),
    ],
)
async def test_watchdog_timeout_names_its_phase_and_closes_the_connection(
    backend: Backend, path: str, timeouts: Timeouts, phase: str
) -> None:
    up = Upstream()
    r = await up.request(backend.url, head(up, backend.url, path, b""), b"", timeouts)
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamTimeout) as exc:
        while await r.readany():
            pass
    assert exc.value.phase == phase
    assert asyncio.get_running_loop().time() - t0 < 5
    assert r.transport is not None and r.transport.is_closing()  # the backend sees us leave
    r.release()
    up.close()


async def test_connect_refused_and_closed_before_answer() -> None:
    up = Upstream()
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError):
        await up.request(url, head(up, url, "/ok", b""), b"", T)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    with pytest.raises(UpstreamClosed):
        await up.request(url, head(up, url, "/ok", b""), b"", T)
    server.close()
    up.close()


def test_a_connection_the_backend_closed_before_the_request_is_a_closed_upstream() -> None:
    # A backend killed between the router's connect and its write (seen in the chaos soak):
    # uvloop raises RuntimeError on such a write; it must be UpstreamClosed, which is retried.
    import uvloop

    from corral.router.upstream import Response, _Target

    async def scenario() -> None:
        async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.transport.abort()

        server = await asyncio.start_server(slam, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        target = _Target(f"http://127.0.0.1:{port}")
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Response(target), "127.0.0.1", port)
        deadline = loop.time() + 5
        while conn.transport is not None and not conn.transport.is_closing() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        with pytest.raises(UpstreamClosed):
            await Upstream._send(conn, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", b"")
        server.close()

    uvloop.run(scenario())
