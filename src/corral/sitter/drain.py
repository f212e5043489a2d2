"""Drain before stopping: once the sitter has left the registry and the router (no new work),
wait until its engine has nothing running or queued, up to ``drain_timeout_s``, then stop it.

Routers only retry a request that has not started answering; a stream cut by the engine's stop
is lost. So on SIGTERM (``corral down``, a Kubernetes pod deletion, systemd) the sitter reads the
engine's own queue from its ``/metrics`` (``corral.engine_queue``: vLLM, SGLang, llama.cpp) every
``POLL_S`` and stops it when the queue is empty. An engine without those metrics (or one that
does not answer) is stopped at once, as before.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

import aiohttp

from corral.engine_queue import queue_length

log = logging.getLogger("corral.sitter")

POLL_S = 0.2
_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


async def engine_queue(session: aiohttp.ClientSession, backend_url: str) -> float | None:
    """Requests running + waiting in the engine now; None when it does not say."""
    try:
        async with session.get(backend_url + "/metrics") as r:
            if r.status != 200:
                return None
            return queue_length(await r.text())
    except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
        return None


async def drain(backend_url: str, timeout_s: float, ssl_ctx: ssl.SSLContext | None = None) -> float:
    """Wait until the engine's queue is empty (or ``timeout_s``); the seconds waited."""
    t0 = time.monotonic()
    connector = aiohttp.TCPConnector(ssl=ssl_ctx) if ssl_ctx is not None else None
    async with aiohttp.ClientSession(timeout=_TIMEOUT, connector=connector) as session:
        while True:
            queued = await engine_queue(session, backend_url)
            waited = time.monotonic() - t0
            if not queued:  # 0, or the engine does not say
                return waited
            if waited >= timeout_s:
                log.warning(
                    "drain: %g request(s) still in the engine after %.1f s; stopping it", queued, waited
                )
                return waited
            await asyncio.sleep(POLL_S)
