"""The HTTP/1.1 server connection the mock and the router share: an asyncio Protocol on httptools.

Why not aiohttp's server: both must cost little per request (the mock less than the router it
measures; the router within DESIGN.md's budget), and aiohttp's request/response machinery was
half of either's cost. This base holds what both need and nothing per-request beyond it:
keep-alive, pipelined requests answered in order (one handler at a time, at most
``Limits.max_queued`` queued, then the socket is paused), a body limit answered with 413 after
the body was read and dropped, a request-head limit (431), deadlines for the head, the body and
keep-alive idleness that a server's sweeper enforces (:meth:`HttpConnection.expired`),
back-pressure (``paused``, ``drain``, ``on_resume``), chunked framing, ``TCP_NODELAY`` and a
client that disconnects cancelling its handler.

Errors the connection finds itself (400, 408, 413, 431) and ``100 Continue`` are never written
while an earlier pipelined response is still going out: they wait (reading paused) until the
requests before them are answered. That keeps every response on the wire whole and in order.

Each subclass says how a request looks (``_request``), how it is run (``_run``: the mock answers
simple requests synchronously from the parser callback, the router runs a task), how errors the
connection finds itself are answered (``_fail``), and collects the headers it needs
(``on_header``; ``Expect: 100-continue`` is answered there).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Generic, TypeVar, cast

import httptools

log = logging.getLogger("corral.http")

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_REASONS[499] = b"Client Closed Request"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_S = 2.0  # how long an answered-with-an-error connection reads and drops input


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``."""
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


STATUS_LINES = {s: status_line(s) for s in _REASONS}

RequestT = TypeVar("RequestT")

# Chunk-size lines of the sizes a streamed piece usually has: ``b"%x\r\n" % n`` formats the
# number through a str, a third of what framing one SSE chunk cost.
CHUNK_HEADS = tuple(b"%x\r\n" % n for n in range(2048))


def chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked body."""
    n = len(data)
    return b"".join((CHUNK_HEADS[n] if n < 2048 else b"%x\r\n" % n, data, b"\r\n"))


class Limits:
    """What one connection may cost: sizes in bytes, times in seconds (0: no limit).

    ``now`` is a coarse clock the server's sweeper advances on every tick: deadlines are set
    from it, so the per-request path never reads the time (a deadline is late by one tick at
    most).
    """

    __slots__ = ("body_timeout", "head_timeout", "keepalive", "max_body", "max_head", "max_queued", "now")

    def __init__(
        self,
        max_body: int = 32 * 1024 * 1024,
        max_head: int = 64 * 1024,
        head_timeout: float = 60.0,
        body_timeout: float = 60.0,
        keepalive: float = 75.0,
        max_queued: int = 16,
    ) -> None:
        self.max_body = max_body
        self.max_head = max_head
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.keepalive = keepalive
        self.max_queued = max_queued
        self.now = time.monotonic()


class Reject(Exception):
    """Raised from a parser callback: answer ``status`` (after earlier responses) and close."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HttpConnection(asyncio.Protocol, Generic[RequestT]):
    """One client connection: parses requests, runs them one at a time, writes the answers.

    Subclasses set ``task`` while a handler runs and call :meth:`_finished` when it is done.
    """

    def __init__(self, connections: set[Any], limits: Limits) -> None:
        self.connections = connections
        self.limits = limits
        self.max_body = limits.max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.queue: collections.deque[RequestT] = collections.deque()
        # When the sweeper may act (0.0: never): the head's, the body's or keep-alive's deadline.
        self.deadline = limits.now + limits.head_timeout if limits.head_timeout else 0.0
        self.on_resume: Callable[[], None] | None = None  # called once when writing may go on
        self._keep_alive = True
        self._chunked = True
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._in_request = False  # between a request's first byte and its end
        self._in_head = False
        self._head_size = 0  # url + header names and values of the head being read
        self._head_raw = 0  # bytes of reads that fell wholly inside the head (bounds httptools' buffer)
        self._continue = False  # a 100 Continue waits for the requests before it
        self._rejected: Reject | None = None  # an error answer waiting for the requests before it
        self._reading = True

    # -- what a subclass provides ----------------------------------------------------------
    def _request(self, body: bytes) -> RequestT:
        """The parsed request (the parser still holds its method, version and keep-alive)."""
        raise NotImplementedError

    def _run(self, req: RequestT) -> None:
        """Start answering ``req``; set ``_keep_alive`` and ``_chunked`` from it first."""
        raise NotImplementedError

    def _fail(self, status: int, message: str, code: str | None = None) -> None:
        """Write an error the connection found itself (400, 408, 413, 431) and close."""
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
        if self._rejected is not None:
            return  # the connection is answered and closes: the rest is not read
        head_before = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            ctx = exc.__context__
            if isinstance(ctx, Reject):
                self.reject(ctx.status, ctx.message, ctx.code)
            else:  # a bug in a callback: logged, answered like a handler bug
                log.error("HTTP server callback failed", exc_info=ctx)
                self.reject(500, "internal server error")
            return
        except httptools.HttpParserUpgrade:
            self.reject(400, "upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            self.reject(400, f"malformed HTTP request: {exc}")
            return
        if self._in_request:
            if self._in_head:
                if self._head_size > self.limits.max_head:  # headers counted, the head not in yet
                    self.reject(431, "request header fields too large", "request_header_too_large")
                elif head_before:
                    # httptools buffers a header until it is complete: bound what it may hold.
                    self._head_raw += len(data)
                    if self._head_raw > 2 * self.limits.max_head:
                        self.reject(431, "request head too large", "request_header_too_large")
            elif self.limits.body_timeout:
                self.deadline = self.limits.now + self.limits.body_timeout  # between reads of a body

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
        lim = self.limits
        self.deadline = lim.now + lim.head_timeout if lim.head_timeout else 0.0
        self._in_request = self._in_head = True
        self._head_size = self._head_raw = 0
        self._url = b""
        self._body = []
        self._size = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self.limits.max_head:
            raise Reject(414, "request URL too long", "request_uri_too_long")

    def _head_done(self) -> None:
        """Call from ``on_headers_complete``: the head is in, the body's deadline starts."""
        self._in_head = False
        lim = self.limits
        self.deadline = lim.now + lim.body_timeout if lim.body_timeout else 0.0

    def _expect_continue(self) -> None:
        """The client waits for ``100 Continue``: send it now, or once earlier answers are out."""
        if self.task is None and not self.queue:
            if self.transport is not None:
                self.transport.write(CONTINUE)
        else:
            self._continue = True

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
        self._in_request = self._in_head = self._continue = False
        self.deadline = 0.0  # the handler's time is the handler's business
        if self._too_large:
            raise Reject(413, f"request body larger than {self.max_body} bytes", "request_too_large")
        req = self._request(self._body[0] if len(self._body) == 1 else b"".join(self._body))
        if self.task is not None or self.queue:
            self.queue.append(req)  # pipelined: answered in order after the running one
            if len(self.queue) >= self.limits.max_queued and self._reading and self.transport is not None:
                self._reading = False  # read no further until the queue shrinks
                self.transport.pause_reading()
        else:
            self._run(req)

    # -- errors the connection finds itself ------------------------------------------------
    def reject(self, status: int, message: str, code: str | None = None) -> None:
        """Answer ``status`` and close: now, or after the responses to earlier requests."""
        if self.closed or self.transport is None or self._rejected is not None:
            return
        self._rejected = Reject(status, message, code)
        self.deadline = 0.0
        self._continue = False
        if self.task is None and not self.queue:
            self._fail(status, message, code)
        elif self._reading:
            self._reading = False
            self.transport.pause_reading()

    def _close_after_error(self) -> None:
        """Close after an error answer without losing it: closing a socket with unread input
        sends a reset that can discard the answer in the client's buffers, so send our FIN,
        read and drop what the client still sends for a moment (nginx's lingering close), then
        close."""
        t = self.transport
        if t is None:
            return
        if self.closed or not t.can_write_eof():
            t.close()
            return
        t.write_eof()
        if not self._reading:
            self._reading = True
            t.resume_reading()
        asyncio.get_running_loop().call_later(_LINGER_S, t.close)

    def eof_received(self) -> bool | None:
        return None  # the client finished sending: close (after writing what is queued)

    def expired(self) -> None:
        """The sweeper found ``deadline`` passed: 408 a request half read, close an idle one."""
        if self._in_request:
            what = "head" if self._in_head else "body"
            self.reject(408, f"timed out reading the request {what}", "request_timeout")
        elif self.task is None and not self.queue and self.transport is not None:
            self.deadline = 0.0
            self.transport.close()

    # -- between requests ------------------------------------------------------------------
    def _finished(self) -> None:
        """The current request is answered: close, or run the next pipelined one."""
        if self.closed or self.transport is None:
            return
        if not self._keep_alive:
            self.transport.close()
            return
        if self.task is not None:
            return
        if self.queue:
            self._run(self.queue.popleft())
            if not self._reading and self._rejected is None and len(self.queue) < self.limits.max_queued:
                self._reading = True
                self.transport.resume_reading()
            return
        if self._rejected is not None:
            r = self._rejected
            self._fail(r.status, r.message, r.code)
        elif self._continue:
            self._continue = False
            self.transport.write(CONTINUE)
        elif not self._in_request:
            lim = self.limits
            self.deadline = lim.now + lim.keepalive if lim.keepalive else 0.0
            if not self._reading:
                self._reading = True
                self.transport.resume_reading()

    # -- writing ---------------------------------------------------------------------------
    def _frame(self, data: bytes) -> bytes:
        """One piece of a streamed body: a chunk, or the bytes as they are for HTTP/1.0."""
        return chunk(data) if self._chunked else data

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
