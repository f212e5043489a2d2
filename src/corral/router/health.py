"""Stalls and outlier ejection: an instance that keeps timing out is taken out, then probed back.

The proxy reports every watchdog timeout (``UpstreamTimeout``: no first token, silence between
tokens, no answer within ``response_s``) with :meth:`Health.on_stall`; a success ends the streak
(``Instance.on_success``). ``outlier.consecutive_stalls`` in a row eject the instance for a
back-off that doubles per ejection (Envoy's outlier detection). When it runs out, one 1-token
completion is sent; only its success re-admits the instance, so a backend whose ``/health`` and
``/v1/models`` answer while its engine is dead stays out.

Stalls are kept apart from the circuit breaker on purpose: the breaker counts errors the backend
answered (5xx, broken connections), stalls count silence. A slow backend under load is neither,
as long as it stays within the watchdog's windows; a client's 4xx or a backend's 429 is never
either (see ``corral.router.proxy``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from corral.genprobe import generates
from corral.router.config import RouterSettings
from corral.router.instance import Instance
from corral.router.pool import Pool

log = logging.getLogger("corral.router")

_TICK = 0.1


class Health:
    """Owns the stall counters, ejections and re-admission probes of the pool's instances."""

    def __init__(self, settings: RouterSettings, pool: Pool) -> None:
        self.settings = settings
        self.pool = pool
        self._task: asyncio.Task[None] | None = None
        self._probing: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._probes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the sweep that probes ejected instances once their back-off ran out."""
        from corral.tls import client_context

        o = self.settings.outlier
        ctx = client_context(self.settings.ca)  # https backends behind a private CA (--ca)
        connector = aiohttp.TCPConnector(ssl=ctx) if ctx is not None else None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=o.probe_timeout_s), connector=connector
        )
        self._task = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        """Stop the sweep and any probe in flight."""
        tasks = [t for t in (self._task, *self._probes) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- called by the proxy -----------------------------------------------------------------
    def on_stall(self, inst: Instance) -> None:
        """A request on ``inst`` timed out (the watchdog cut it): eject after a streak."""
        inst.stalls += 1
        inst.stalls_total += 1
        if not inst.ejected and inst.stalls >= self.settings.outlier.consecutive_stalls:
            self.eject(inst)

    def eject(self, inst: Instance) -> None:
        """Take ``inst`` out for its next back-off period."""
        o = self.settings.outlier
        backoff = min(o.base_ejection_s * (2 ** min(inst.ejections, 20)), o.max_ejection_s)
        inst.ejected = True
        inst.ejected_until = time.monotonic() + backoff
        inst.ejections += 1
        self.pool.refresh(inst)  # out of its models' routable sets now
        log.warning("instance %s ejected for %gs after %d stalls in a row", inst.url, backoff, inst.stalls)

    def readmit(self, inst: Instance) -> None:
        """A probe generated a token: back in rotation with a clean streak."""
        inst.ejected = False
        inst.stalls = 0
        log.warning("instance %s re-admitted: its generation probe answered", inst.url)
        self.pool.wake(inst)

    # -- the sweep ---------------------------------------------------------------------------
    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_TICK)
            now = time.monotonic()
            for inst in list(self.pool.instances.values()):
                if inst.ejected and now >= inst.ejected_until and inst.id not in self._probing:
                    self._probing.add(inst.id)
                    task = asyncio.create_task(self._probe(inst))
                    self._probes.add(task)
                    task.add_done_callback(self._probes.discard)

    async def _probe(self, inst: Instance) -> None:
        try:
            ok = await generates(self._session, inst.url, inst.models[0] if inst.models else "")
        finally:
            self._probing.discard(inst.id)
        if self.pool.instances.get(inst.id) is not inst or not inst.ejected:
            return  # removed, replaced or re-admitted meanwhile
        if ok:
            self.readmit(inst)
        else:
            self.eject(inst)
