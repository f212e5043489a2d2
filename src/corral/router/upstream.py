"""The router's upstream HTTP/1.1 client: an asyncio protocol on httptools with a keep-alive pool.

Why not aiohttp's client: building a ``ClientRequest`` (auto headers, payload objects, timeout
handles, a ``StreamReader``) was a third of the router's CPU per proxied request in py-spy. Here a
request is one pre-assembled ``bytes`` write on a pooled connection, and the response arrives as
status, content type and body pieces straight from the parser callbacks.

Timeouts cost one timer per request, not one per chunk: ``data_received`` stamps the time and the
timer, armed for the shortest window there may be, re-arms itself when it fires for the rest of
the idle window (``first`` until the first body byte, ``read`` after it) or the request's deadline
(``total``), whichever is sooner. This is
the router's stall watchdog: a backend silent past the window is cut (``UpstreamTimeout`` with its
``phase``) and its connection aborted, so the backend sees the disconnect and stops generating.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

_PAUSE_AT = 256 * 1024  # buffered body bytes before we stop reading from the backend
_MAX_IDLE = 512  # idle keep-alive connections kept per backend


class UpstreamError(Exception):
    """The backend could not give a complete answer (after the request was sent)."""


class ConnectError(UpstreamError):
    """No connection could be opened; ``os_error`` says why."""

    def __init__(self, os_error: BaseException) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class UpstreamTimeout(UpstreamError, TimeoutError):
    """The backend was silent for longer than its window, or the total ran out.

    ``phase``: ``"first_token"`` (no body byte yet), ``"inter_token"`` (silent between body
    pieces) or ``"response"`` (the request's deadline passed); ``seconds``: the limit that hit.
    """

    def __init__(self, phase: str, seconds: float) -> None:
        super().__init__(f"backend sent nothing for {seconds:g}s ({phase.replace('_', ' ')})")
        self.phase = phase
        self.seconds = seconds


class UpstreamClosed(UpstreamError):
    """The backend closed the connection before the response ended."""


class Timeouts:
    """Seconds: ``connect``, ``read`` (between pieces of the body), ``total`` (None: no limit),
    ``first`` (until the first body byte; ``read`` when not given)."""

    __slots__ = ("connect", "first", "read", "total")

    def __init__(self, connect: float, read: float, total: float | None, first: float | None = None) -> None:
        self.connect, self.read, self.total = connect, read, total
        self.first = read if first is None else first


class _Target:
    """A backend base URL, parsed once: where to connect and what to put in ``Host``."""

    __slots__ = ("dead_peer_s", "host", "host_header", "idle", "port", "ssl")

    def __init__(self, url: str, dead_peer_s: float | None = None) -> None:
        self.dead_peer_s = dead_peer_s
        u = urlsplit(url)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if u.scheme == "https" else None
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if self.ssl else 80)
        self.host_header = b"Host: " + u.netloc.encode() + b"\r\n\r\n"
        self.idle: list[Response] = []


def _detect_dead_peer(sock: socket.socket, after_s: float) -> None:
    """Have the kernel drop the connection once the peer's host is silent for ~``after_s``.

    TCP_USER_TIMEOUT fails a connection whose sent bytes stay unacknowledged that long (a
    request written to a host that was cut off), and keep-alive probes every ``after_s`` on an
    idle or waiting connection make the same check while the backend is thinking (its kernel
    acknowledges them however long the generation takes). Without this, a request sent to a
    host whose link went down waits for the read timeout (minutes), not for a LAN's second.
    """
    ms = max(1, int(after_s * 1000))
    secs = max(1, round(after_s))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, secs)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, secs)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, ms)
    except (OSError, AttributeError):  # not Linux: the read timeout still bounds the wait
        pass


class Response(asyncio.Protocol):
    """One upstream connection and the response in progress on it.

    After :meth:`Upstream.request` returns, ``status`` and ``content_type`` are set; read the body
    with :meth:`read` (whole) or :meth:`readany` (pieces as they arrive, ``b""`` at the end), then
    call :meth:`release`, which pools the connection if the response ended cleanly and closes it
    otherwise (a backend that is still generating sees the disconnect and stops).
    """

    # One per upstream connection (a thousand streams: a thousand of these): no __dict__.
    __slots__ = (
        "_buffered",
        "_chunks",
        "_deadline",
        "_error",
        "_first_s",
        "_last",
        "_loop",
        "_paused",
        "_read_s",
        "_sink",
        "_timer",
        "_total_s",
        "_waiter",
        "_whole",
        "complete",
        "content_type",
        "got_body",
        "got_bytes",
        "headers_done",
        "keep_alive",
        "lost",
        "parser",
        "retry_after",
        "status",
        "target",
        "timed_out",
        "transport",
    )

    def __init__(self, target: _Target) -> None:
        self.target = target
        # Kept: asyncio.get_running_loop() makes a getpid() system call on every call (3.11).
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.content_type = b"application/json"
        self.lost = False
        self.timed_out = False
        self._last = 0.0
        self._deadline: float | None = None
        self._read_s = self._first_s = self._total_s = 0.0
        self._reset()

    def _reset(self) -> None:
        self.headers_done = False
        self.complete = False
        self.got_bytes = False
        self.got_body = False
        self.keep_alive = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._whole = False  # read() wants the whole body: no pausing at _PAUSE_AT
        self.retry_after: bytes | None = None
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sink: Callable[[bytes], None] | None = None
        # _last, _deadline, _read_s, _first_s, _total_s: set by _start_timer before each request.

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.target.dead_peer_s:
                _detect_dead_peer(sock, self.target.dead_peer_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.timed_out = isinstance(exc, TimeoutError)  # ETIMEDOUT: the peer's host went silent
        idle = self.target.idle
        if self in idle:
            idle.remove(self)
        if not self.complete:
            self._fail(UpstreamClosed("backend closed the connection" + (f": {exc}" if exc else "")))

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self._last = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed response from backend: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        if n == 12 and name.lower() == b"content-type":
            self.content_type = value
        elif n == 11 and name.lower() == b"retry-after":
            self.retry_after = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.got_body = True  # the watchdog's window is ``read`` from now on (see _check)
        if self._sink is not None:
            self._sink(body)
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _PAUSE_AT and not self._whole and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._stop_timer()
        self._wake()

    # -- waiting ---------------------------------------------------------------------------
    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._stop_timer()
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_exception(exc)

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        await self._waiter

    def _start_timer(self, t: Timeouts) -> None:
        now = time.monotonic()
        self._last = now
        read = self._read_s = t.read
        first = self._first_s = t.first
        total = t.total
        self._total_s = total or 0.0
        self._deadline = now + total if total else None
        # Armed for the shortest window (the first body byte may switch ``first`` to ``read``):
        # when it fires early, _check re-arms for what is left, so on_body never touches it.
        due = first if read >= first else read
        if total is not None and total < due:
            due = total
        self._timer = self._loop.call_later(due, self._check)

    def _check(self) -> None:
        now = time.monotonic()
        window = self._read_s if self.got_body else self._first_s
        left = self._last + window - now
        phase = "inter_token" if self.got_body else "first_token"
        if self._deadline is not None and self._deadline - now < left:
            left = self._deadline - now
            phase, window = "response", self._total_s
        if left > 0:
            self._timer = self._loop.call_later(left, self._check)
            return
        self._timer = None
        self._fail(UpstreamTimeout(phase, window))
        if self.transport is not None:
            self.transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the body --------------------------------------------------------------------------
    async def read(self) -> bytes:
        """The whole body (reading is never paused for it: the caller wants all of it)."""
        self._whole = True
        if self._paused:
            self.resume()
        while not self.complete:
            await self._wait()
        data = b"".join(self._chunks)
        self._chunks = []
        return data

    async def readany(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); ``b""`` at the end."""
        while not self._chunks:
            if self.complete:
                return b""
            await self._wait()
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def relay(self, sink: Callable[[bytes], None]) -> None:
        """From now on hand each body piece to ``sink`` as it is parsed (no task switch per piece).

        Pieces already buffered go first. ``sink`` must not raise; wait for the end (or the
        failure) with :meth:`wait_end`, and throttle with :meth:`pause` / :meth:`resume`.
        """
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks = []
            sink(data)
        self._sink = sink
        self._buffered = 0
        self.resume()

    async def wait_end(self) -> None:
        """Return when the response ended; raise the upstream failure if it failed first."""
        while not self.complete:
            await self._wait()

    def pause(self) -> None:
        """Stop reading from the backend (the client reads slower than it generates)."""
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        """Read from the backend again."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def release(self) -> None:
        """Pool the connection after a complete response; close it in any other case."""
        self._stop_timer()
        if self.transport is None:
            return
        if self.complete and self.keep_alive and not self.lost and len(self.target.idle) < _MAX_IDLE:
            self._reset()  # the parser stays: after a complete keep-alive response it is at
            self.content_type = b"application/json"  # the start of the next one
            self.target.idle.append(self)
        else:
            self.lost = True
            self.transport.abort()


class Upstream:
    """Sends requests to backends over pooled keep-alive connections."""

    def __init__(self, dead_peer_s: float | None = None) -> None:
        """``dead_peer_s``: drop connections whose peer host is silent that long (None: never)."""
        self._targets: dict[str, _Target] = {}
        self.dead_peer_s = dead_peer_s

    def host_header(self, base_url: str) -> bytes:
        """The ``Host`` header line for ``base_url`` and the blank line that ends a request head."""
        return self._target(base_url).host_header

    def _target(self, base_url: str) -> _Target:
        t = self._targets.get(base_url)
        if t is None:
            t = self._targets[base_url] = _Target(base_url, self.dead_peer_s)
        return t

    async def request(self, base_url: str, head: bytes, body: bytes, timeouts: Timeouts) -> Response:
        """Send ``head`` (request line and headers, ending with :meth:`host_header`) and ``body``.

        Returns once the response headers arrived. Raises :class:`ConnectError` when no
        connection could be opened and :class:`UpstreamError` when the backend failed before its
        headers. A pooled connection the backend closed meanwhile is replaced transparently.
        """
        target = self._target(base_url)
        idle = target.idle
        while idle:
            conn = idle.pop()
            if conn.lost or conn.transport is None or conn.transport.is_closing():
                continue
            conn._start_timer(timeouts)
            try:
                return await self._send(conn, head, body)
            except UpstreamClosed as exc:
                if conn.timed_out:
                    # The host is cut off (its kernel did not acknowledge the request): a new
                    # connection would only wait out the connect timeout as well.
                    conn.release()
                    raise ConnectError(TimeoutError(f"backend host silent: {exc}")) from None
                if conn.got_bytes:
                    raise
                conn.release()  # the backend dropped an idle connection as we reused it: once more
                break
            except BaseException:
                conn.release()
                raise
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Response(target),
                    target.host,
                    target.port,
                    ssl=target.ssl,
                    server_hostname=target.host if target.ssl else None,
                ),
                timeouts.connect,
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectError(exc) from None
        conn._start_timer(timeouts)
        try:
            return await self._send(conn, head, body)
        except UpstreamClosed as exc:
            conn.release()
            if conn.timed_out:  # cut off before answering: as unreachable as a failed connect
                raise ConnectError(TimeoutError(f"backend host silent: {exc}")) from None
            raise
        except BaseException:
            conn.release()
            raise

    @staticmethod
    async def _send(conn: Response, head: bytes, body: bytes) -> Response:
        transport = conn.transport
        # A backend killed between our connect and this write: its connection is already closed
        # (uvloop raises on such a write). That is a closed upstream, which the proxy retries.
        if transport is None or transport.is_closing():
            raise UpstreamClosed("backend closed the connection before the request was sent")
        try:
            transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                transport.write(body)
        except RuntimeError as exc:
            raise UpstreamClosed(f"backend closed the connection: {exc}") from None
        while not conn.headers_done:
            await conn._wait()
        return conn

    def close(self) -> None:
        """Close every pooled connection."""
        for t in self._targets.values():
            idle, t.idle = t.idle, []
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.abort()
