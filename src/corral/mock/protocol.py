"""A minimal HTTP/1.1 server protocol on httptools: the mock's whole network layer.

Why not aiohttp's server: the mock must cost less per request than the router it is used to
measure (<= 90 us). A bare aiohttp low-level handler returning a fixed body cost 55 us CPU per
request in bench/mock_throughput.py's set-up; this protocol, doing all of the mock's work,
43 us, because simple requests are answered synchronously from the parser callback, without
a task per request (docs/mock.md). It speaks what OpenAI clients need: keep-alive,
pipelining (answered in order), ``Expect: 100-continue``, chunked request and response bodies.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, Protocol, cast

import httptools

log = logging.getLogger("corral.mock")

MAX_BODY = 64 * 1024 * 1024
JSON = b"application/json"
_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\nserver: corral-mock\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}
_CLOSE = b"connection: close\r\n"
_BAD_REQUEST = (
    b'{"error":{"message":"malformed HTTP request","type":"invalid_request_error","param":null,"code":null}}'
)
_TOO_LARGE = (
    b'{"error":{"message":"request body too large","type":"invalid_request_error","param":null,"code":null}}'
)


class Request:
    """One parsed request; the body is complete before a handler sees it."""

    __slots__ = ("body", "http10", "keep_alive", "method", "path", "query", "request_id")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        request_id: bytes | None,
        keep_alive: bool,
        http10: bool = False,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.request_id = request_id
        self.keep_alive = keep_alive
        self.http10 = http10


class App(Protocol):
    """What the protocol serves: answer now (return None) or return a coroutine to run."""

    def dispatch(self, conn: Connection, req: Request) -> Coroutine[Any, Any, None] | None: ...

    def internal_error(self, conn: Connection, req: Request) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection. Handlers write through ``respond`` or the ``stream_*`` methods."""

    def __init__(self, app: App, connections: set[Connection]) -> None:
        self.app = app
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.parser = httptools.HttpRequestParser(self)
        self.task: asyncio.Task[None] | None = None
        self.queue: collections.deque[Request] = collections.deque()
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._url = b""
        self._rid: bytes | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._rid_header = b""
        self._chunked = True
        self._keep_alive = True

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Nagle + delayed ACK adds ~40 ms to every small streamed write: never here.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        if self.task is not None:
            self.task.cancel()  # the handler counts it as aborted
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("client went away"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, _BAD_REQUEST)
        except httptools.HttpParserError:
            self._fail(400, _BAD_REQUEST)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._rid = None
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 12 and name.lower() == b"x-request-id":
            self._rid = value
        elif len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= MAX_BODY:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._size > MAX_BODY:
            self._fail(413, _TOO_LARGE)
            return
        url = self._url
        path, _, query = url.partition(b"?")
        req = Request(
            self.parser.get_method().decode("ascii", "replace"),
            path.decode("utf-8", "replace"),
            query.decode("utf-8", "replace"),
            b"".join(self._body),
            self._rid,
            self.parser.should_keep_alive(),
            self.parser.get_http_version() == "1.0",
        )
        if self.task is not None or self.queue:
            self.queue.append(req)  # pipelined: answered in order after the running one
        else:
            self._run(req)

    # -- dispatch --------------------------------------------------------------------------
    def _run(self, req: Request) -> None:
        self._keep_alive = req.keep_alive
        self._chunked = not req.http10
        self._rid_header = b"x-request-id: " + req.request_id + b"\r\n" if req.request_id else b""
        try:
            coro = self.app.dispatch(self, req)
        except Exception:  # the one boundary: a handler bug must not kill the connection silently
            log.exception("mock handler failed: %s %s", req.method, req.path)
            self.app.internal_error(self, req)
            coro = None
        if coro is None:
            self._finished()
            return
        self.task = asyncio.get_running_loop().create_task(coro)
        self.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("mock handler failed", exc_info=task.exception())
            if self.transport is not None and not self.closed:
                self.transport.close()
            return
        self._finished()

    def _finished(self) -> None:
        if self.closed or self.transport is None:
            return
        if not self._keep_alive:
            self.transport.close()
            return
        if self.queue and self.task is None:
            self._run(self.queue.popleft())

    def _fail(self, status: int, body: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(
                _STATUS_LINES[status]
                + b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
                + _CLOSE
                + b"\r\n"
                + body
            )
            self.transport.close()

    # -- responses -------------------------------------------------------------------------
    def respond(self, status: int, body: bytes, content_type: bytes = JSON, headers: bytes = b"") -> None:
        """Send a whole response (status line, headers, body) in one write."""
        if self.closed or self.transport is None:
            return
        self.transport.write(
            _STATUS_LINES[status]
            + b"content-type: "
            + content_type
            + b"\r\ncontent-length: %d\r\n" % len(body)
            + self._rid_header
            + headers
            + (b"" if self._keep_alive else _CLOSE)
            + b"\r\n"
            + body
        )

    def stream_start(self, first: bytes = b"") -> None:
        """Send the headers of a server-sent-events response (and, in the same write, ``first``)."""
        if self.closed or self.transport is None:
            return
        if self._chunked:
            head = b"transfer-encoding: chunked\r\n"
        else:  # HTTP/1.0 knows no chunks: the body ends when the connection does
            head = _CLOSE
            self._keep_alive = False
        self.transport.write(
            _STATUS_LINES[200]
            + b"content-type: text/event-stream\r\ncache-control: no-cache\r\n"
            + head
            + self._rid_header
            + b"\r\n"
            + (self._frame(first) if first else b"")
        )

    def stream_write(self, data: bytes) -> None:
        """Send one piece of the streamed body."""
        if not self.closed and self.transport is not None:
            self.transport.write(self._frame(data))

    def stream_end(self, last: bytes = b"") -> None:
        """Send ``last`` and end the streamed body."""
        if self.closed or self.transport is None:
            return
        if self._chunked:
            self.transport.write((self._frame(last) if last else b"") + b"0\r\n\r\n")
        elif last:
            self.transport.write(last)

    async def drain(self) -> None:
        """Wait while the client reads slower than we write; raises if it went away."""
        if self.closed:
            raise ConnectionResetError("client went away")
        if self._paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def _frame(self, data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data


def connection_factory(app: App, connections: set[Connection]) -> Callable[[], Connection]:
    """The protocol factory for ``loop.create_server``."""
    return lambda: Connection(app, connections)
