"""The engines' own load, read from their Prometheus ``/metrics`` off the hot path.

Every ``interval`` seconds each instance's ``/metrics`` is read (at most ``_PARALLEL`` at once)
and its queue (running + waiting requests) stored on the instance with our in-flight count at
that moment, so that ``Instance.load`` adds what we sent since. Names understood: vLLM
(``vllm:num_requests_running`` + ``vllm:num_requests_waiting``), SGLang (``sglang:num_running_reqs``
+ ``sglang:num_queue_reqs``), llama.cpp's server (``llamacpp:requests_processing`` +
``llamacpp:requests_deferred``). An instance without them (or unreachable) falls back to our
own in-flight count. The engine counts requests from every router and client, which is the
point: several routers in front of one fleet see each other's load.

With ``speed_probe``, an instance that becomes routable before anything timed it gets one
1-token completion of a fixed ~64-token prompt, timed: its first floor of time to first byte
(``Instance.observe``). So ``cache_aware`` knows a slow replica before the first burst of real
requests meets it, not after (one probe per address, at most ``_PROBE_TRIES`` tries). Every
``reprobe_s`` an instance that looks slow (floor above the typical one by more than
``speed_slack``) and had no answer since is timed again: its floor takes a lower figure at once,
so a slow first answer (an engine's warm-up) does not starve a good replica for good.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp

from corral.engine_queue import queue_length
from corral.genprobe import generates
from corral.router.instance import Instance, typical_floor
from corral.router.pool import Pool

__all__ = ["EngineLoad", "queue_length"]

_PARALLEL = 32
_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
_PROBE_PROMPT = " ".join(f"speed probe word {k}" for k in range(16))  # ~64 tokens
_PROBE_TRIES = 3


class EngineLoad:
    """Scrapes every instance's ``/metrics`` each ``interval`` seconds."""

    def __init__(
        self,
        pool: Pool,
        interval: float,
        speed_probe: bool = False,
        reprobe_s: float = 0.0,
        slack: float = 0.25,
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.task: asyncio.Task[None] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.speed_probe = speed_probe
        self.reprobe_s = reprobe_s if speed_probe else 0.0
        self.slack = slack
        self._tries: dict[str, int] = {}  # address -> speed probes started (timed: _PROBE_TRIES)
        self._probes: set[asyncio.Task[None]] = set()
        self._seen: dict[str, int] = {}  # instance id -> its samples at the last re-probe round

    def start(self) -> None:
        """Start the background loop (and the speed probes: on each instance's first routable)."""
        self.session = aiohttp.ClientSession(timeout=_TIMEOUT)
        if self.interval:
            self.task = asyncio.create_task(self._loop())
        if self.speed_probe:
            self.pool.on_routable = self._routable
            for inst in list(self.pool.instances.values()):
                if inst.healthy:
                    self._routable(inst)
        if self.reprobe_s:
            self._spawn(self._reprobe_loop())

    async def close(self) -> None:
        """Stop the loop and the probes, and close the session."""
        self.pool.on_routable = None
        for t in list(self._probes):
            t.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    async def _loop(self) -> None:
        sem = asyncio.Semaphore(_PARALLEL)
        while True:
            t0 = time.monotonic()
            by_url: dict[str, list[Instance]] = {}
            for inst in self.pool.instances.values():
                if inst.healthy:
                    by_url.setdefault(inst.url, []).append(inst)
            await asyncio.gather(*(self._scrape(url, insts, sem) for url, insts in by_url.items()))
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - t0)))

    async def _scrape(self, url: str, insts: list[Instance], sem: asyncio.Semaphore) -> None:
        assert self.session is not None
        value: float | None = None
        try:
            async with sem, self.session.get(url + "/metrics") as r:
                if r.status == 200:
                    value = queue_length(await r.text())
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
            return  # keep the last figure: one slow scrape must not make a busy engine look idle
        for inst in insts:
            inst.engine_load = -1.0 if value is None else value
            inst.engine_base = inst.outstanding

    def _routable(self, inst: Instance) -> None:
        """Pool.refresh found ``inst`` routable: time it once if nothing has yet."""
        if inst.floor_s or self._tries.get(inst.url, 0) >= _PROBE_TRIES or not inst.models:
            return
        self._tries[inst.url] = self._tries.get(inst.url, 0) + 1
        self._spawn(self._time(inst.url, inst.models[0]))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _reprobe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reprobe_s)
            healthy = [i for i in self.pool.instances.values() if i.healthy and i.floor_s and i.models]
            typical = typical_floor(sorted(i.floor_s for i in healthy))
            if not typical:
                continue
            seen, self._seen = self._seen, {i.id: i.samples for i in healthy}
            for inst in healthy:
                if inst.floor_s > typical * (1 + self.slack) and seen.get(inst.id) == inst.samples:
                    self._spawn(self._time(inst.url, inst.models[0]))  # looks slow, and idle

    async def _time(self, url: str, model: str) -> None:
        t0 = time.perf_counter()
        ok = await generates(self.session, url, model, _PROBE_PROMPT)
        elapsed = time.perf_counter() - t0
        if not ok:
            return  # not ready, or no completions: the next routable tries again (a few times)
        self._tries[url] = _PROBE_TRIES
        for inst in list(self.pool.instances.values()):
            if inst.url == url:
                inst.observe(elapsed)
