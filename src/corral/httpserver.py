"""The HTTP/1.1 server connection the mock and the router share: an asyncio Protocol on httptools.

Why not aiohttp's server: both must cost little per request (the mock less than the router it
measures; the router within DESIGN.md's budget), and aiohttp's request/response machinery was
half of either's cost. This base holds what both need and nothing per-request beyond it:
keep-alive, pipelined requests answered in order (one handler at a time, the rest queued), a
body limit answered with 413 after the body was read and dropped, back-pressure (``paused``,
``drain``, ``on_resume``), chunked framing, ``TCP_NODELAY`` and a client that disconnects
cancelling its handler.

Each subclass says how a request looks (``_request``), how it is run (``_run``: the mock answers
simple requests synchronously from the parser callback, the router runs a task), how errors the
connection finds itself are answered (``_fail``), and collects the headers it needs
(``on_header``; ``Expect: 100-continue`` is answered there).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Generic, TypeVar, cast

import httptools

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_REASONS[499] = b"Client Closed Request"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``."""
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


STATUS_LINES = {s: status_line(s) for s in _REASONS}

RequestT = TypeVar("RequestT")


class HttpConnection(asyncio.Protocol, Generic[RequestT]):
    """One client connection: parses requests, runs them one at a time, writes the answers.

    Subclasses set ``task`` while a handler runs and call :meth:`_finished` when it is done.
    """

    def __init__(self, connections: set[Any], max_body: int) -> None:
        self.connections = connections
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.queue: collections.deque[RequestT] = collections.deque()
        self.idle_since = time.monotonic()  # 0.0 while a request is being read or handled
        self.on_resume: Callable[[], None] | None = None  # called once when writing may go on
        self._keep_alive = True
        self._chunked = True
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False

    # -- what a subclass provides ----------------------------------------------------------
    def _request(self, body: bytes) -> RequestT:
        """The parsed request (the parser still holds its method, version and keep-alive)."""
        raise NotImplementedError

    def _run(self, req: RequestT) -> None:
        """Start answering ``req``; set ``_keep_alive`` and ``_chunked`` from it first."""
        raise NotImplementedError

    def _fail(self, status: int, message: str, code: str | None = None) -> None:
        """Answer an error the connection found itself (400, 413) and close."""
        raise NotImplementedError

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Nagle + the client's delayed ACK stalls small streamed writes by ~40 ms: never here.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        if self.task is not None:
            self.task.cancel()  # the client left: its handler counts it as aborted and cleans up
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("client went away"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrades are not supported")
        except httptools.HttpParserError:
            self._fail(400, "malformed HTTP request")

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self.on_resume is not None:
            cb, self.on_resume = self.on_resume, None
            cb()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.idle_since = 0.0
        self._url = b""
        self._body = []
        self._size = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._size += len(body)
        if self._size > self.max_body:
            self._too_large = True  # read on and drop the rest, then answer 413
            self._body = []
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._too_large:
            self._fail(413, f"request body larger than {self.max_body} bytes", "request_too_large")
            return
        req = self._request(self._body[0] if len(self._body) == 1 else b"".join(self._body))
        if self.task is not None or self.queue:
            self.queue.append(req)  # pipelined: answered in order after the running one
        else:
            self._run(req)

    # -- between requests ------------------------------------------------------------------
    def _finished(self) -> None:
        """The current request is answered: close, or run the next pipelined one."""
        if self.closed or self.transport is None:
            return
        if not self._keep_alive:
            self.transport.close()
            return
        if self.queue and self.task is None:
            self._run(self.queue.popleft())
        elif self.task is None:
            self.idle_since = time.monotonic()

    # -- writing ---------------------------------------------------------------------------
    def _frame(self, data: bytes) -> bytes:
        """One piece of a streamed body: a chunk, or the bytes as they are for HTTP/1.0."""
        return b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data

    @property
    def paused(self) -> bool:
        """Whether the client reads slower than we write (then ``await drain()``)."""
        return self._paused

    async def drain(self) -> None:
        """Wait until the client caught up; raises ConnectionResetError if it left."""
        if self.closed:
            raise ConnectionResetError("client went away")
        if self._paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain
