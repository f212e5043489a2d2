"""The SSE relay sink: upstream stream bytes to the client's transport, cut on line boundaries."""

from __future__ import annotations

from corral.router import sse
from corral.router.context import rename_model
from corral.router.http import Connection
from corral.router.upstream import Response


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
        if b'"usage"' in chunk:
            u = sse.usage_at(chunk)
            if u is not None:
                self.usage = u
                if self.strip_usage:
                    chunk = sse.strip_usage_event(chunk)
        if self.rename is not None:
            chunk = rename_model(chunk, self.rename)
        return chunk

    def __call__(self, data: bytes) -> None:
        conn = self.conn
        chunk = self.cut(data)
        if not chunk or conn.closed:
            return  # a client that left is noticed by the server, which cancels the handler
        conn.stream_write(chunk)
        if conn.paused:
            self.resp.pause()
            conn.on_resume = self.resp.resume
