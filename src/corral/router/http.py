"""The router's HTTP/1.1 front: :mod:`corral.httpserver`'s connection, the router's handlers.

Why not aiohttp's server: with the upstream side already on a bare protocol, aiohttp's request
and response machinery (``BaseRequest``, ``StreamResponse.prepare``, the payload writer, its
``StreamReader``) was half of what the router spent per request. Here the parser callbacks
collect the headers and body, one task runs the handler, and every response is one ``write``
(a stream: one per chunk, with chunked framing, no ``await`` unless the client reads slowly).

Semantics kept from aiohttp's server as the router used it: keep-alive, requests on one
connection answered in order, ``Expect: 100-continue``, a body limit answered with 413 (as
OpenAI JSON), ``TCP_NODELAY``, and a client that disconnects cancels its handler. The
connection mechanics are shared with the mock (``corral.httpserver``); the router adds a header
dict, a task per request, OpenAI-JSON errors and the keep-alive idle sweep (:class:`Server`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from corral.errors import error_body
from corral.httpserver import STATUS_LINES, HttpConnection, Limits, Reject, status_line

log = logging.getLogger("corral.router")

_CLOSE = b"Connection: close\r\n"
_CHUNKED = b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
_UNCHUNKED = b"Cache-Control: no-cache\r\n" + _CLOSE  # HTTP/1.0: the body ends with the connection


class Request:
    """One parsed request; the body is complete before a handler sees it.

    ``headers`` has lower-case names (the last value wins for repeated names).
    """

    __slots__ = ("_query", "body", "headers", "http10", "keep_alive", "method", "path", "raw_path")

    def __init__(
        self,
        method: str,
        raw_path: str,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
        http10: bool = False,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = raw_path.partition("?")[0]
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http10 = http10
        self._query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (first value of each)."""
        if self._query is None:
            q: dict[str, str] = {}
            for k, v in parse_qsl(self.raw_path.partition("?")[2], keep_blank_values=True):
                q.setdefault(k, v)
            self._query = q
        return self._query


class Reply:
    """A whole response: status, body, content type and extra header lines (pre-encoded)."""

    __slots__ = ("body", "content_type", "extra", "status")

    def __init__(
        self, status: int, body: bytes, content_type: bytes = b"application/json", extra: bytes = b""
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.extra = extra  # b"Name: value\r\n" lines


# A handler answers with a Reply, or streams through the connection itself and returns None.
Handler = Callable[[Request, "Connection"], Awaitable[Reply | None]]
Dispatch = Callable[[Request], Handler | None]


def json_reply(status: int, doc: Any, request_id: str, extra: bytes = b"") -> Reply:
    """A JSON body with the request id header."""
    return Reply(
        status, json.dumps(doc).encode(), extra=b"X-Request-ID: " + _enc(request_id) + b"\r\n" + extra
    )


def error_reply(
    status: int, message: str, request_id: str, code: str | None = None, retry_after: int | None = None
) -> Reply:
    """An OpenAI-style JSON error (``corral.errors.error_body``), with ``Retry-After`` when given."""
    extra = b"Retry-After: %d\r\n" % retry_after if retry_after is not None else b""
    return json_reply(status, error_body(message, status, code), request_id, extra)


def _enc(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


class Connection(HttpConnection[Request]):
    """One client connection: parses requests, runs one handler task at a time, writes replies."""

    def __init__(self, server: Server) -> None:
        super().__init__(server.connections, server.limits)
        self.server = server
        self._max_head = server.limits.max_head
        self.started = False  # whether the current request's response head went out
        self._headers: dict[str, str] = {}
        # Kept: asyncio.get_running_loop() makes a getpid() system call on every call (3.11).
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        limit = self.server.max_connections
        if limit and len(self.connections) > limit:
            self.reject(503, f"too many connections (limit {limit})", "too_many_connections")

    # -- httptools callbacks ---------------------------------------------------------------
    # Once per request (on_header once per header): no super() objects, no helper calls.
    def on_message_begin(self) -> None:
        HttpConnection.on_message_begin(self)
        self._headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only counted here: the limit is checked once the head is in (on_headers_complete) or
        # at the end of each read while it is not (data_received), so at most one read's worth
        # of headers (the transport reads at most 256 KiB at a time) is held before the 431.
        self._head_size += len(name) + len(value)
        self._headers[name.decode("latin-1").lower()] = value.decode("utf-8", "surrogateescape")

    def on_headers_complete(self) -> None:
        if self._head_size > self._max_head:
            raise Reject(431, "request header fields too large", "request_header_too_large")
        self._in_head = False  # HttpConnection._head_done, inlined
        lim = self.limits
        self.deadline = lim.now + lim.body_timeout if lim.body_timeout else 0.0
        length = self._headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            self._too_large = True  # read and drop the body, then answer 413
        elif self._headers.get("expect", "").lower() == "100-continue":
            self._expect_continue()

    def _request(self, body: bytes) -> Request:
        return Request(
            self.parser.get_method().decode("ascii", "replace"),
            self._url.decode("utf-8", "surrogateescape"),
            self._headers,
            body,
            self.parser.should_keep_alive(),
            self.parser.get_http_version() == "1.0",
        )

    # -- dispatch --------------------------------------------------------------------------
    def _run(self, req: Request) -> None:
        self._keep_alive = req.keep_alive and not self.server.draining
        self._chunked = not req.http10
        self.started = False
        handler = self.server.dispatch(req)
        if handler is None:
            rid = req.headers.get("x-request-id") or self.server.new_id()
            self.send(error_reply(404, f"no route for {req.method} {req.path}", rid, "not_found"))
            self._finished()
            return
        self.task = self._loop.create_task(self._handle(handler, req))

    async def _handle(self, handler: Handler, req: Request) -> None:
        try:
            reply = await handler(req, self)
            if reply is not None:
                self.send(reply)
        except asyncio.CancelledError:
            raise
        except Exception:  # the one boundary: a handler bug answers 500 and is logged
            log.exception("router handler failed: %s %s", req.method, req.path)
            if not self.started:
                rid = req.headers.get("x-request-id") or self.server.new_id()
                self.send(error_reply(500, "internal router error", rid))
            elif self.transport is not None:
                self.transport.close()
        finally:
            self.task = None
        self._finished()

    def _fail(self, status: int, message: str, code: str | None = None) -> None:
        if self.transport is not None and not self.closed:
            self._keep_alive = False
            rid = self._headers.get("x-request-id") or self.server.new_id()
            self.send(error_reply(status, message, rid, code))
            self._close_after_error()

    # -- responses -------------------------------------------------------------------------
    def send(self, reply: Reply) -> None:
        """Write a whole response in one write."""
        if self.closed or self.transport is None:
            return
        self.started = True
        body = reply.body
        self.transport.write(
            (STATUS_LINES.get(reply.status) or status_line(reply.status))
            + b"Content-Type: "
            + reply.content_type
            + b"\r\nContent-Length: %d\r\n" % len(body)
            + reply.extra
            + (b"" if self._keep_alive else _CLOSE)
            + b"\r\n"
            + body
        )

    def stream_start(self, status: int, content_type: bytes, extra: bytes, first: bytes) -> None:
        """Send a chunked response's head and, in the same write, its first piece."""
        if self.closed or self.transport is None:
            raise ConnectionResetError("client went away")
        self.started = True
        if self._chunked:
            head = _CHUNKED + (b"" if self._keep_alive else _CLOSE)
            first = self._frame(first) if first else b""
        else:
            head, self._keep_alive = _UNCHUNKED, False
        self.transport.write(
            (STATUS_LINES.get(status) or status_line(status))
            + b"Content-Type: "
            + content_type
            + b"\r\n"
            + head
            + extra
            + b"\r\n"
            + first
        )

    def stream_write(self, data: bytes) -> None:
        """Send one piece of the chunked body (call :meth:`drain` when ``paused``)."""
        if self.closed or self.transport is None:
            raise ConnectionResetError("client went away")
        self.transport.write(self._frame(data))

    def stream_end(self, last: bytes = b"") -> None:
        """Send ``last`` and end the chunked body."""
        if self.closed or self.transport is None:
            raise ConnectionResetError("client went away")
        if not self._chunked:
            if last:
                self.transport.write(last)
            return  # _finished closes the connection, which ends the body
        self.transport.write((self._frame(last) if last else b"") + b"0\r\n\r\n")


class Server:
    """Listens and serves ``dispatch``'s handlers.

    One sweeper task advances ``limits.now`` and enforces every connection's deadline (head,
    body, keep-alive). ``drain`` stops accepting and lets handlers finish; ``close`` stops all.
    """

    def __init__(
        self,
        dispatch: Dispatch,
        new_id: Callable[[], str],
        limits: Limits | None = None,
        max_connections: int = 0,
    ) -> None:
        self.dispatch = dispatch
        self.limits = limits or Limits()
        self.max_body = self.limits.max_body
        self.new_id = new_id  # request ids for answers the server gives itself (404, 413, 400)
        self.max_connections = max_connections
        self.draining = False
        self.connections: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, ssl: Any = None, reuse_port: bool = False) -> None:
        """Bind and listen (HTTPS with ``ssl``, an ``ssl.SSLContext``; ``reuse_port``: one of
        several processes sharing the port, ``SO_REUSEPORT``)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self),
            host,
            port,
            backlog=2048,
            reuse_address=True,
            reuse_port=reuse_port or None,
            ssl=ssl,
        )
        self._sweeper = loop.create_task(self._sweep())

    def _tick(self) -> float:
        lim = self.limits
        spans = [t for t in (lim.head_timeout, lim.body_timeout, lim.keepalive) if t > 0]
        return min(1.0, max(0.02, min(spans, default=4.0) / 4))

    async def _sweep(self) -> None:
        """Advance the coarse clock and act on passed deadlines (one timer for all connections)."""
        tick, lim = self._tick(), self.limits
        while True:
            await asyncio.sleep(tick)
            now = lim.now = time.monotonic()
            for conn in list(self.connections):
                if 0.0 < conn.deadline < now:
                    conn.expired()

    def busy(self) -> int:
        """How many connections have a request being handled or queued."""
        return sum(1 for c in self.connections if c.task is not None or c.queue)

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, close idle connections, and wait up to ``timeout`` s for the handlers.

        Responses given meanwhile close their connection. Returns whether all finished in time.
        """
        self.draining = True
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + timeout
        while True:
            for conn in list(self.connections):
                conn._keep_alive = False  # each answers what it has, then closes
                if conn.task is None and not conn.queue and not conn._in_request and conn.transport:
                    conn.transport.close()
            if not self.busy():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Stop listening, close connections and wait for their handlers."""
        if self._server is not None:
            self._server.close()
        tasks = [self._sweeper] if self._sweeper is not None else []
        for conn in list(self.connections):
            if conn.task is not None:
                tasks.append(conn.task)
            if conn.transport is not None:
                conn.transport.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
