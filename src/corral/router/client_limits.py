"""``[router.limits]``: what one client connection may cost the router (sizes, times, counts).

Defaults follow nginx and uvicorn: a 60 s header and body read timeout (nginx
``client_header_timeout`` / ``client_body_timeout``), 75 s keep-alive (nginx
``keepalive_timeout``), a 64 KiB request head (nginx allows 4 x 8 KiB lines; heads with long
tokens or cookies stay well under 64 KiB). 0 turns a timeout or the connection cap off.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from corral.httpserver import Limits


class ClientLimits(BaseModel):
    """Limits and timeouts of the router's client connections (``[router.limits]``)."""

    model_config = ConfigDict(extra="forbid")

    max_head_bytes: int = Field(default=64 * 1024, ge=1024)  # URL + headers; past it: 431 (URL: 414)
    head_timeout_s: float = Field(default=60.0, ge=0)  # the whole head must arrive within; 408
    body_timeout_s: float = Field(default=60.0, ge=0)  # between two reads of a body; 408
    keepalive_timeout_s: float = Field(default=75.0, ge=0)  # idle keep-alive connections close
    max_pipelined: int = Field(default=16, ge=1)  # queued requests per connection; then reading pauses
    max_connections: int = Field(default=0, ge=0)  # 0: no cap; past it new connections get 503

    def connection_limits(self, max_body: int) -> Limits:
        """The plain object the connections read on every request."""
        return Limits(
            max_body=max_body,
            max_head=self.max_head_bytes,
            head_timeout=self.head_timeout_s,
            body_timeout=self.body_timeout_s,
            keepalive=self.keepalive_timeout_s,
            max_queued=self.max_pipelined,
        )
