"""The engines' own load, read from their Prometheus ``/metrics`` off the hot path.

Every ``interval`` seconds each instance's ``/metrics`` is read (at most ``_PARALLEL`` at once)
and its queue (running + waiting requests) stored on the instance with our in-flight count at
that moment, so that ``Instance.load`` adds what we sent since. Names understood: vLLM
(``vllm:num_requests_running`` + ``vllm:num_requests_waiting``), SGLang (``sglang:num_running_reqs``
+ ``sglang:num_queue_reqs``), llama.cpp's server (``llamacpp:requests_processing`` +
``llamacpp:requests_deferred``). An instance without them (or unreachable) falls back to our
own in-flight count. The engine counts requests from every router and client, which is the
point: several routers in front of one fleet see each other's load.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from corral.engine_queue import queue_length
from corral.router.instance import Instance
from corral.router.pool import Pool

__all__ = ["EngineLoad", "queue_length"]

_PARALLEL = 32
_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


class EngineLoad:
    """Scrapes every instance's ``/metrics`` each ``interval`` seconds."""

    def __init__(self, pool: Pool, interval: float) -> None:
        self.pool = pool
        self.interval = interval
        self.task: asyncio.Task[None] | None = None
        self.session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Start the background loop."""
        self.session = aiohttp.ClientSession(timeout=_TIMEOUT)
        self.task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        """Stop the loop and close its session."""
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
