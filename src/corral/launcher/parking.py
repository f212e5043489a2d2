"""Park and unpark a sitter's engine: stop or start only the backend, the sitter stays up.

An idle on-demand model keeps its sitter (API, registry link, GPU gate, warm Python) and stops
only the engine, through the sitter's admin API (``POST /stop``, ``POST /start`` with the
backend's admin token). A wake then costs the engine's own start plus a few local round trips
instead of a second Python process booting first (about a second on an idle machine, many under
load). The sitter answers with its ``/health`` body, so the launcher's view of the backend is
right the moment the call returns, not a poll later. A sitter that does not answer is the
caller's to stop whole.
"""

from __future__ import annotations

import logging
import ssl as ssl_
from typing import Any

import aiohttp

from corral.launcher.backends import BackendStatus, parse_health
from corral.launcher.http_client import session

log = logging.getLogger(__name__)

# A stop waits for the engine's tree to end (its grace, then SIGKILL); a start returns once
# the engine is spawned.
_TIMEOUT = aiohttp.ClientTimeout(total=120.0, sock_connect=2.0)


class Parking:
    """Admin calls to the sitters of on-demand replicas, and which of them are parked."""

    def __init__(self, ssl: ssl_.SSLContext | None = None) -> None:
        self.parked: set[str] = set()  # process names whose engine we stopped on purpose
        self.ssl = ssl
        self._session: aiohttp.ClientSession | None = None

    async def call(self, health_url: str, action: str, token: str | None) -> BackendStatus | str:
        """``POST {sitter}/{action}`` (start or stop): the backend's status after it, or why not."""
        if self._session is None:
            self._session = session(self.ssl, timeout=_TIMEOUT)
        url = health_url.removesuffix("/health") + "/" + action
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self._session.post(url, headers=headers) as r:
                body: Any = await r.json(content_type=None)
                if r.status != 200:
                    err = body.get("error", {}) if isinstance(body, dict) else {}
                    return f"{url}: HTTP {r.status} {err.get('message', '')}".strip()
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
            return f"{url}: {str(exc) or type(exc).__name__}"
        got = parse_health(body)
        return got if got is not None else f"{url}: not a sitter's answer"

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
