"""Stalls and outlier ejection: an instance that keeps timing out is taken out, then probed back.

The proxy reports every watchdog timeout (``UpstreamTimeout``: no first token, silence between
tokens, no answer within ``response_s``) with :meth:`Health.on_stall`; a success ends the streak
(``Instance.on_success``). ``outlier.consecutive_stalls`` in a row eject the instance for a
back-off that doubles per ejection (Envoy's outlier detection). When it runs out (a timer per
ejection: nothing wakes up while no instance is ejected), one 1-token completion is sent; only
its success re-admits the instance, so a backend whose ``/health`` and ``/v1/models`` answer
while its engine is dead stays out.

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


class Health:
    """Owns the stall counters, ejections and re-admission probes of the pool's instances."""

    def __init__(self, settings: RouterSettings, pool: Pool) -> None:
        self.settings = settings
        self.pool = pool
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}  # instance id -> its back-off's end
        self._probing: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._probes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """From now on, an ejected instance is probed once its back-off ran out."""
        from corral.tls import client_context

        o = self.settings.outlier
        ctx = client_context(self.settings.ca)  # https backends behind a private CA (--ca)
        connector = aiohttp.TCPConnector(ssl=ctx) if ctx is not None else None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=o.probe_timeout_s), connector=connector
        )
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Stop the back-off timers and any probe in flight."""
        self._loop = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._probes)
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
        self._at(inst.id, backoff)
        log.warning("instance %s ejected for %gs after %d stalls in a row", inst.url, backoff, inst.stalls)

    def readmit(self, inst: Instance) -> None:
        """A probe generated a token: back in rotation with a clean streak."""
        inst.ejected = False
        inst.stalls = 0
        log.warning("instance %s re-admitted: its generation probe answered", inst.url)
        self.pool.wake(inst)

    # -- the back-off's end -------------------------------------------------------------------
    def _at(self, instance_id: str, delay: float) -> None:
        """Call :meth:`_due` for ``instance_id`` in ``delay`` s (replacing an earlier timer)."""
        if self._loop is None:
            return  # not started (or closed): nothing probes
        old = self._timers.pop(instance_id, None)
        if old is not None:
            old.cancel()
        self._timers[instance_id] = self._loop.call_later(max(0.0, delay), self._due, instance_id)

    def _due(self, instance_id: str) -> None:
        """An ejection's back-off ran out: probe the instance now holding that id (a registry
        update replaces the object and keeps the ejection), unless it is back or gone."""
        self._timers.pop(instance_id, None)
        inst = self.pool.instances.get(instance_id)
        if inst is None or not inst.ejected or instance_id in self._probing or self._loop is None:
            return
        left = inst.ejected_until - time.monotonic()
        if left > 0:  # the loop's clock is a little coarser: a moment more
            self._at(instance_id, left)
            return
        self._probing.add(instance_id)
        task = self._loop.create_task(self._probe(inst))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self, inst: Instance) -> None:
        try:
            ok = await generates(self._session, inst.url, inst.models[0] if inst.models else "")
        finally:
            self._probing.discard(inst.id)
        cur = self.pool.instances.get(inst.id)
        if cur is not inst or not inst.ejected:
            if cur is not None and cur is not inst and cur.ejected:
                self._at(cur.id, cur.ejected_until - time.monotonic())  # replaced: probe the new one
            return  # removed, replaced or re-admitted meanwhile
        if ok:
            self.readmit(inst)
        else:
            self.eject(inst)
