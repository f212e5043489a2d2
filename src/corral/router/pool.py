"""The set of instances, indexed by model, with per-instance concurrency and a bounded queue.

``acquire`` picks an instance with the policy, or parks the request in the model's queue until an
instance frees up (the first one that does gets the oldest waiter: single-slot llama.cpp servers
rely on this). ``release`` gives the slot back and hands it straight to a waiter.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from corral.router.instance import Instance

Select = Callable[[list[Instance], Any], Instance | None]


class QueueFull(Exception):
    """The model's wait queue is full."""


class QueueTimeout(Exception):
    """No instance freed up within the queue timeout."""


class Pool:
    """Instances by id and by model; all mutation happens on the event loop."""

    def __init__(self, *, queue_size: int = 1024, aliases: dict[str, str] | None = None) -> None:
        self.instances: dict[str, Instance] = {}
        self.by_model: dict[str, list[Instance]] = {}
        self.aliases = dict(aliases or {})
        self.queue_size = queue_size
        self.waiters: dict[str, deque[asyncio.Future[Instance]]] = {}
        self.revision = 0  # bumped on any membership change (policies cache on it)
        # Every model some instance ever served: one whose instances are all gone now is
        # unavailable (503), not unknown (404).
        self.seen_models: set[str] = set()

    # -- membership -------------------------------------------------------------------------
    def upsert(self, inst: Instance) -> Instance:
        """Add or replace the instance with ``inst.id``, keeping the live load of an old one."""
        old = self.instances.get(inst.id)
        if old is not None:
            inst.outstanding = old.outstanding
            inst.failures, inst.circuit, inst.open_until = old.failures, old.circuit, old.open_until
            inst.trial_in_flight = old.trial_in_flight
            if not old.reachable and not inst.probe_ok:
                inst.reachable = False
        self.instances[inst.id] = inst
        self._reindex()
        self.wake(inst)
        return inst

    def remove(self, instance_id: str) -> Instance | None:
        """Drop an instance; requests in flight on it finish on their own."""
        inst = self.instances.pop(instance_id, None)
        if inst is not None:
            self._reindex()
        return inst

    def set_models(self, inst: Instance, models: Iterable[str]) -> None:
        """Update what an instance serves (a probe read its /v1/models)."""
        models = tuple(models)
        if models != inst.models:
            inst.models = models
            self._reindex()

    def _reindex(self) -> None:
        index: dict[str, list[Instance]] = {}
        for inst in self.instances.values():
            for m in inst.models:
                index.setdefault(m, []).append(inst)
        self.by_model = index
        self.seen_models.update(index)
        self.revision += 1

    # -- lookup -----------------------------------------------------------------------------
    def resolve(self, model: str) -> str:
        """The real model name behind an alias (or the name itself)."""
        return self.aliases.get(model, model)

    def known(self, model: str) -> bool:
        """Whether any instance (healthy or not) serves ``model``."""
        return model in self.by_model

    def model_names(self) -> list[str]:
        """Served model names, then aliases whose target is served."""
        names = sorted(self.by_model)
        names += sorted(a for a, t in self.aliases.items() if t in self.by_model and a not in names)
        return names

    def has_healthy(self, model: str) -> bool:
        """Whether some instance of ``model`` is healthy (maybe busy or breaker-open)."""
        return any(i.healthy for i in self.by_model.get(model, ()))

    # -- dispatch ---------------------------------------------------------------------------
    def try_acquire(
        self, model: str, select: Select, ctx: Any, exclude: tuple[Instance, ...] = ()
    ) -> Instance | None:
        """An instance for ``model`` chosen by ``select`` among routable ones, counted as busy."""
        insts = self.by_model.get(model)
        if not insts:
            return None
        now = time.monotonic()
        cands = [i for i in insts if i.routable(now) and i not in exclude]
        if not cands:
            return None
        inst = select(cands, ctx) if len(cands) > 1 else cands[0]
        if inst is not None:
            inst.on_dispatch(now)
        return inst

    async def acquire(
        self, model: str, select: Select, ctx: Any, timeout: float, exclude: tuple[Instance, ...] = ()
    ) -> Instance | None:
        """Like :meth:`try_acquire`, but wait in the queue when every healthy instance is busy.

        Returns None when no instance is healthy at all; raises :class:`QueueFull` or
        :class:`QueueTimeout` when waiting fails.
        """
        inst = self.try_acquire(model, select, ctx, exclude)
        if inst is not None or not self.has_healthy(model):
            return inst
        q = self.waiters.get(model)
        if q is None:
            q = self.waiters[model] = deque()
        if len(q) >= self.queue_size:
            raise QueueFull(model)
        fut: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        q.append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise QueueTimeout(model) from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())  # handed a slot just as we left: pass it on
            raise
        finally:
            try:
                q.remove(fut)
            except ValueError:
                pass

    def release(self, inst: Instance) -> None:
        """Give back the slot taken on ``inst`` and hand it to the oldest waiter, if any."""
        inst.outstanding -= 1
        inst.trial_in_flight = False
        self.wake(inst)

    def wake(self, inst: Instance) -> None:
        """Hand free capacity on ``inst`` to waiters of the models it serves."""
        if not self.waiters:
            return
        now = time.monotonic()
        for m in inst.models:
            q = self.waiters.get(m)
            while q and inst.routable(now):
                fut = q.popleft()
                if not fut.done():
                    inst.on_dispatch(now)
                    fut.set_result(inst)
            if q is not None and not q:
                del self.waiters[m]
