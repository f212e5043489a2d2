"""The SSE relay sink: upstream stream bytes to the client's transport, cut on line boundaries."""

from __future__ import annotations

from corral.httpserver import CHUNK_HEADS
from corral.router import sse
from corral.router.context import rename_model
from corral.router.http import Connection
from corral.router.upstream import Response

_USAGE = b'"usage"'
_USAGE_NULL = b'"usage":null'


class Sink:
    """Takes upstream SSE bytes as they are parsed and writes them to the client at once.

    Cuts on line boundaries (a partial line waits in ``carry`` for the rest, so an event is
    never split), finds the usage with one byte search per piece, strips the usage event the
    router asked for, and pauses the backend while the client's buffer is full.
    """

    __slots__ = ("carry", "conn", "rename", "resp", "strip_usage", "usage")

    def __init__(
        self, conn: Connection, resp: Response, strip_usage: bool, rename: tuple[bytes, bytes] | None = None
    ) -> None:
        self.conn = conn
        self.resp = resp
        self.strip_usage = strip_usage
        self.rename = rename
        self.carry = b""
        self.usage: tuple[int, int] | None = None

    def cut(self, chunk: bytes) -> bytes:
        """The complete lines of ``carry + chunk`` (usage noted, and stripped when ours)."""
        if self.carry:
            chunk, self.carry = self.carry + chunk, b""
        if not chunk.endswith(b"\n"):
            cut = chunk.rfind(b"\n") + 1
            chunk, self.carry = chunk[:cut], chunk[cut:]
        if chunk.find(_USAGE) >= 0:  # not ``in``: bytes.__contains__ raises and clears a TypeError first
            u = sse.usage_at(chunk)
            if u is not None:
                self.usage = u
                if self.strip_usage:
                    chunk = sse.strip_usage_event(chunk)
        if self.rename is not None:
            chunk = rename_model(chunk, self.rename)
        return chunk

    def __call__(self, data: bytes) -> None:
        # Once per relayed chunk. The common case skips cut(): whole lines, no alias to put back,
        # and no usage object (the "usage":null that every chunk of an include_usage stream
        # carries is none: cut() would find nothing). Connection.stream_write, _frame and
        # paused are inlined: no Python call but this one per chunk.
        if (
            self.carry
            or self.rename is not None
            or data[-1:] != b"\n"
            or data.count(_USAGE) != data.count(_USAGE_NULL)
        ):
            data = self.cut(data)
            if not data:
                return
        conn = self.conn
        transport = conn.transport
        if conn.closed or transport is None:
            return  # a client that left is noticed by the server, which cancels the handler
        if conn._chunked:
            n = len(data)
            data = b"".join((CHUNK_HEADS[n] if n < 2048 else b"%x\r\n" % n, data, b"\r\n"))
        transport.write(data)
        if conn._paused:
            self.resp.pause()
            conn.on_resume = self.resp.resume
