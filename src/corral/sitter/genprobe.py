"""The sitter's generation probe: take a backend that cannot generate out of rotation.

Why the sitter runs it and not the router: the sitter is the one place that knows the backend
(its preset, its ``/metrics``, its process), can restart it, and owns its registry entry, so one
probe per backend serves every router reading the registry; a router-side probe would multiply
with the routers and could not restart anything. The router keeps its own, request-driven check
(stall watchdog and outlier ejection, ``corral.router.health``), which needs no schedule.

Every ``interval_s`` while the backend is healthy: if its finished-request counter moved since
the last look, real traffic already proved it generates and nothing is sent; otherwise one
1-token completion (``corral.genprobe.generates``). ``failures`` misses in a row mark the
backend out (``on_change(False)``); the next success marks it back in. ``restart_after`` misses
in a row restart it, when configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from corral.genprobe import generates
from corral.settings.generation_probe import GenerationProbe

log = logging.getLogger("corral.sitter")


def counter_sum(text: str, name: str) -> float | None:
    """The sum of every sample of ``name`` in Prometheus text (None when it has none)."""
    total, seen = 0.0, False
    n = len(name)
    for line in text.splitlines():
        if line.startswith(name) and line[n : n + 1] in ("{", " "):
            try:
                total += float(line.rsplit(" ", 1)[1])
                seen = True
            except (IndexError, ValueError):
                continue
    return total if seen else None


class GenerationProber:
    """Runs the schedule for one backend; ``out`` says whether it took the backend out."""

    def __init__(
        self,
        cfg: GenerationProbe,
        base_url: str,
        model: Callable[[], str],
        busy_metric: str | None,
        ready: Callable[[], bool],
        on_change: Callable[[bool], None],
        restart: Callable[[], Awaitable[None]],
        ca: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.base_url = base_url
        self.model = model
        self.busy_metric = cfg.busy_metric or busy_metric
        self.ready = ready
        self.on_change = on_change
        self.restart = restart
        self.ca = ca  # https backends behind a private CA
        self.out = False
        self.failures = 0  # in a row
        self.probes = 0
        self.skipped_busy = 0
        self.restarts = 0  # restarts the probe asked for
        self.last_ok: bool | None = None
        self._seen: float | None = None

    def status(self) -> dict[str, object]:
        """For the sitter's ``/info`` and ``/health``."""
        return {
            "interval_s": self.cfg.interval_s,
            "out": self.out,
            "failures_in_a_row": self.failures,
            "probes": self.probes,
            "skipped_busy": self.skipped_busy,
            "restarts": self.restarts,
            "last_ok": self.last_ok,
        }

    def reset(self) -> None:
        """The backend (re)started: a new process starts with a clean record."""
        self.failures = 0
        self._seen = None
        if self.out:
            self.out = False  # the supervisor's own state change already tells the registry

    async def run(self) -> None:
        """Probe on schedule until cancelled."""
        from corral.tls import client_context

        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        ctx = client_context(self.ca)
        connector = aiohttp.TCPConnector(ssl=ctx) if ctx is not None else None
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while True:
                await asyncio.sleep(self.cfg.interval_s)
                if self.ready():
                    await self.tick(session)

    async def tick(self, session: aiohttp.ClientSession) -> None:
        """One scheduled look: skip when busy, else probe and act on the result."""
        if not self.out and await self._busy(session):
            self.skipped_busy += 1
            self._set(True)
            return
        self.probes += 1
        ok = await generates(session, self.base_url, self.model())
        self._seen = await self._count(session)  # our own probe must not look like traffic
        self._set(ok)
        if not ok and self.cfg.restart_after and self.failures >= self.cfg.restart_after:
            log.warning("generation probe failed %d times in a row: restarting the backend", self.failures)
            self.failures = 0
            self.restarts += 1
            await self.restart()

    def _set(self, ok: bool) -> None:
        self.last_ok = ok
        if ok:
            self.failures = 0
            if self.out:
                self.out = False
                log.warning("generation probe of %s answered: back in rotation", self.base_url)
                self.on_change(True)
            return
        self.failures += 1
        if not self.out and self.failures >= self.cfg.failures:
            self.out = True
            log.warning(
                "generation probe of %s failed %d times in a row: out of rotation",
                self.base_url,
                self.failures,
            )
            self.on_change(False)

    async def _busy(self, session: aiohttp.ClientSession) -> bool:
        """Whether the backend finished requests since the last look (its traffic is the probe)."""
        count = await self._count(session)
        seen, self._seen = self._seen, count
        return count is not None and seen is not None and count > seen

    async def _count(self, session: aiohttp.ClientSession) -> float | None:
        if not self.busy_metric:
            return None
        try:
            async with session.get(self.base_url + "/metrics") as r:
                if r.status != 200:
                    return None
                return counter_sum(await r.text(), self.busy_metric)
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
            return None
