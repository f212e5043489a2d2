"""The mock's HTTP/1.1 server protocol: :mod:`corral.httpserver`'s connection, the mock's answers.

Why not aiohttp's server: the mock must cost less per request than the router it is used to
measure (<= 90 us). A bare aiohttp low-level handler returning a fixed body cost 55 us CPU per
request in bench/mock_throughput.py's set-up; this protocol, doing all of the mock's work,
43 us, because simple requests are answered synchronously from the parser callback, without
a task per request (docs/mock.md). The connection itself (keep-alive, pipelining answered in
order, body limit, back-pressure, chunked framing) is shared with the router in
``corral.httpserver``; here are what the mock reads of a request (only ``X-Request-ID`` and
``Expect``: no header dict) and how it writes its answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from corral.httpserver import STATUS_LINES, HttpConnection, Limits, Reject

log = logging.getLogger("corral.mock")

MAX_BODY = 64 * 1024 * 1024
# The mock has no sweeper: no read deadlines, only the size and pipelining bounds.
_LIMITS = Limits(max_body=MAX_BODY, head_timeout=0, body_timeout=0, keepalive=0)
JSON = b"application/json"
_STATUS_LINES = {s: line + b"server: corral-mock\r\n" for s, line in STATUS_LINES.items()}
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


class Connection(HttpConnection[Request]):
    """One client connection. Handlers write through ``respond`` or the ``stream_*`` methods."""

    def __init__(self, app: App, connections: set[Connection], limits: Limits = _LIMITS) -> None:
        super().__init__(connections, limits)
        self.app = app
        self._rid: bytes | None = None
        self._rid_header = b""

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._rid = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value)
        if self._head_size > self.limits.max_head:
            raise Reject(431, "request header fields too large")
        if len(name) == 12 and name.lower() == b"x-request-id":
            self._rid = value
        elif len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expect_continue()

    def on_headers_complete(self) -> None:
        self._head_done()

    def _request(self, body: bytes) -> Request:
        path, _, query = self._url.partition(b"?")
        return Request(
            self.parser.get_method().decode("ascii", "replace"),
            path.decode("utf-8", "replace"),
            query.decode("utf-8", "replace"),
            body,
            self._rid,
            self.parser.should_keep_alive(),
            self.parser.get_http_version() == "1.0",
        )

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

    def _fail(self, status: int, message: str, code: str | None = None) -> None:
        # The mock keeps its fixed answers: any parse error (upgrades too) is "malformed".
        body = _TOO_LARGE if status in (413, 431) else _BAD_REQUEST
        if self.transport is not None and not self.closed:
            self.transport.write(
                _STATUS_LINES[status]
                + b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
                + _CLOSE
                + b"\r\n"
                + body
            )
            self._close_after_error()

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


def connection_factory(app: App, connections: set[Connection]) -> Callable[[], Connection]:
    """The protocol factory for ``loop.create_server``."""
    return lambda: Connection(app, connections)
