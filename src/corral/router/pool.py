"""The set of instances, indexed by model, with per-instance concurrency and a bounded queue.

``acquire`` picks an instance with the policy, or parks the request in the model's queue until an
instance frees up (the first one that does gets the next waiter: single-slot llama.cpp servers
rely on this). ``release`` gives the slot back and hands it straight to a waiter.

Each model's routable instances are a :class:`corral.router.routable.Routable` kept up to date by
:meth:`Pool.refresh`, which every state change calls (registry events, probes, circuit changes,
a full or freed concurrency slot): a request never scans the fleet. ``Instance.routable`` stays
the one predicate of who may take traffic; an instance whose open circuit will allow a trial
later waits in a heap keyed by that time, and comes back when a request finds it due.

The queue is a :class:`~corral.router.queue.FairQueue`: by priority, then round-robin across
API keys, and in arrival order for one key (so without keys it is a plain FIFO).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from corral.router.instance import CLOSED, Instance
from corral.router.queue import FairQueue
from corral.router.routable import Routable

Select = Callable[[Routable, Any], Instance | None]
# Called with (model, key name, seconds waited) for every request that waited in a queue.
WaitHook = Callable[[str, str, float], None]


class QueueFull(Exception):
    """The model's wait queue is full."""


class QueueTimeout(Exception):
    """No instance freed up within the queue timeout."""


def _expire(fut: asyncio.Future[Instance], model: str) -> None:
    if not fut.done():
        fut.set_exception(QueueTimeout(model))


class Pool:
    """Instances by id and by model; all mutation happens on the event loop."""

    def __init__(self, *, queue_size: int = 1024, aliases: dict[str, str] | None = None) -> None:
        self.instances: dict[str, Instance] = {}
        self.by_model: dict[str, list[Instance]] = {}
        self.aliases = dict(aliases or {})
        self.queue_size = queue_size
        self.waiters: dict[str, FairQueue[asyncio.Future[Instance]]] = {}
        self.on_wait: WaitHook | None = None
        self.revision = 0  # bumped on any membership change (policies cache on it)
        # Every model some instance ever served: one whose instances are all gone now is
        # unavailable (503), not unknown (404).
        self.seen_models: set[str] = set()
        self.routable: dict[str, Routable] = {}
        self._cooling: list[tuple[float, int, Instance]] = []  # (open_until, seq, inst): a heap
        self._seq = itertools.count()
        self.on_routable: Callable[[Instance], None] | None = None

    # -- membership -------------------------------------------------------------------------
    def upsert(self, inst: Instance) -> Instance:
        """Add or replace the instance with ``inst.id``, keeping the live load of an old one."""
        old = self.instances.get(inst.id)
        if old is not None:
            inst.inherit(old)
            self._leave(old)
        inst.notify = self.refresh
        self.instances[inst.id] = inst
        self._reindex(old, inst)
        self.wake(inst)
        return inst

    def remove(self, instance_id: str) -> Instance | None:
        """Drop an instance; requests in flight on it finish on their own."""
        inst = self.instances.pop(instance_id, None)
        if inst is not None:
            self._leave(inst)
            self._reindex(inst, None)
        return inst

    def set_models(self, inst: Instance, models: Iterable[str]) -> None:
        """Update what an instance serves (a probe read its /v1/models)."""
        models = tuple(models)
        if models != inst.models:
            self._leave(inst)
            self._reindex(inst, None)
            inst.models = models
            self._reindex(None, inst)
            self.refresh(inst)

    def _leave(self, inst: Instance) -> None:
        """Take ``inst`` out of every routable set (it is replaced, removed or re-modelled)."""
        inst.notify = None
        for m in inst.models:
            r = self.routable.get(m)
            if r is not None:
                r.remove(inst)

    def _reindex(self, old: Instance | None, new: Instance | None) -> None:
        """Put ``new`` in place of ``old`` in the models' lists (either may be None).

        Each changed model gets a new list (a C-speed copy), so that caches keyed on the list
        (``prefix_affinity``'s ring) rebuild, and the rest of the fleet is not walked.
        """
        self.revision += 1
        old_models = old.models if old is not None else ()
        new_models = new.models if new is not None else ()
        for m in dict.fromkeys((*old_models, *new_models)):
            insts = list(self.by_model.get(m, ()))
            at = -1
            if old is not None and m in old_models:
                try:
                    at = insts.index(old)  # Instance has no __eq__: identity, at C speed
                except ValueError:
                    pass
            if new is not None and m in new_models:
                if at >= 0:
                    insts[at] = new
                else:
                    insts.append(new)
            elif at >= 0:
                del insts[at]
            if not insts:
                self.by_model.pop(m, None)
                self.routable.pop(m, None)
                continue
            self.by_model[m] = insts
            self.seen_models.add(m)
            r = self.routable.get(m)
            if r is None:
                r = self.routable[m] = Routable()
            r.instances = insts
            r.generation = self.revision

    # -- routability --------------------------------------------------------------------------
    def refresh(self, inst: Instance, now: float | None = None) -> None:
        """Put ``inst`` in or out of its models' routable sets after any change of its state.

        Every state change calls this (directly, through ``Instance.notify``, or via
        :meth:`wake`): health from a probe or the registry, a connect error, the circuit, a
        concurrency slot taken or freed. Cheap when nothing changed.
        """
        if self.instances.get(inst.id) is not inst:
            return  # replaced or removed: its requests finish, it takes no new ones
        if now is None:
            now = time.monotonic()
        ok = inst.routable(now)
        if ok and not inst.floor_s and self.on_routable is not None:
            self.on_routable(inst)  # never timed yet (corral.router.engine_load's speed probe)
        for m in inst.models:
            r = self.routable.get(m)
            if r is not None:
                if ok:
                    r.add(inst)
                else:
                    r.remove(inst)
        if not ok and inst.circuit is not CLOSED and inst.open_until > now and not inst.cooling:
            inst.cooling = True  # due for a trial later: come back then (and not before)
            heapq.heappush(self._cooling, (inst.open_until, next(self._seq), inst))

    def _readmit(self, now: float) -> None:
        """Open circuits whose cool-down is over: routable again for one trial."""
        cooling = self._cooling
        while cooling and cooling[0][0] <= now:
            inst = heapq.heappop(cooling)[2]
            inst.cooling = False
            self.refresh(inst, now)

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
        now = time.monotonic()
        if self._cooling and self._cooling[0][0] <= now:
            self._readmit(now)
        cands = self.routable.get(model)
        if cands is None:
            return None
        if exclude:
            cands = cands.without(exclude)
        members = cands.members
        n = len(members)
        if not n:
            return None
        inst = select(cands, ctx) if n > 1 else members[0]
        if inst is None:
            return None
        # _dispatch, inlined (once per request); a lone member has no load buckets to keep.
        old = inst.outstanding
        inst.on_dispatch(now)
        for m in inst.models:
            r = self.routable.get(m)
            if r is not None and len(r.members) > 1:
                r.moved(inst, old)
        if (inst.max_concurrency and inst.outstanding >= inst.max_concurrency) or inst.trial_in_flight:
            self.refresh(inst, now)
        return inst

    def _dispatch(self, inst: Instance, now: float) -> None:
        """Count a request sent to ``inst``; it leaves the sets when full or on trial."""
        old = inst.outstanding
        inst.on_dispatch(now)
        for m in inst.models:
            r = self.routable.get(m)
            if r is not None and len(r.members) > 1:
                r.moved(inst, old)
        if (inst.max_concurrency and inst.outstanding >= inst.max_concurrency) or inst.trial_in_flight:
            self.refresh(inst, now)

    async def acquire(
        self,
        model: str,
        select: Select,
        ctx: Any,
        timeout: float,
        exclude: tuple[Instance, ...] = (),
        key: str = "",
        priority: int = 0,
    ) -> Instance | None:
        """Like :meth:`try_acquire`, but wait in the queue when every healthy instance is busy.

        ``key`` and ``priority`` place the waiter in the fair queue (the API key's name and
        priority). Returns None when no instance is healthy at all; raises :class:`QueueFull`
        or :class:`QueueTimeout` when waiting fails.
        """
        inst = self.try_acquire(model, select, ctx, exclude)
        if inst is not None or not self.has_healthy(model):
            return inst
        q = self.waiters.get(model)
        if q is None:
            q = self.waiters[model] = FairQueue()
        if len(q) >= self.queue_size:
            raise QueueFull(model)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Instance] = loop.create_future()
        q.push(fut, key, priority)
        t0 = time.monotonic()
        # A timer on the future itself, not asyncio.wait_for: on 3.12 wait_for raises TimeoutError
        # even when the slot was handed over in the same loop turn as the timeout, and the slot
        # leaks. Here whichever comes first settles the future; the other finds it done.
        timer = loop.call_later(timeout, _expire, fut, model)
        try:
            inst = await fut
            if self.on_wait is not None:
                self.on_wait(model, key, time.monotonic() - t0)
            return inst
        except QueueTimeout:
            if self.on_wait is not None:
                self.on_wait(model, key, time.monotonic() - t0)
            raise
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())  # handed a slot just as we left: pass it on
            raise
        finally:
            timer.cancel()
            try:
                q.remove(fut)
            except ValueError:
                pass

    def release(self, inst: Instance) -> None:
        """Give back the slot taken on ``inst`` and hand it to the next waiter, if any."""
        cur = self.instances.get(inst.id)
        if cur is inst:
            # The common case, on every request: only a full instance or one on trial can become
            # routable by this release (every other change of state refreshes itself), so the
            # refresh is skipped when neither was the case and nobody waits.
            old = inst.outstanding
            was_out = inst.trial_in_flight or (inst.max_concurrency and old >= inst.max_concurrency)
            inst.outstanding = old - 1
            inst.trial_in_flight = False
            for m in inst.models:
                r = self.routable.get(m)
                if r is not None and len(r.members) > 1:
                    r.moved(inst, old)
            if was_out or self.waiters:
                self.wake(inst)
            return
        if cur is not None and cur is not inst and cur.outstanding > 0:
            self._unload(cur)  # replaced while busy: the new one inherited this request's count
        self._unload(inst)
        self.wake(inst if cur is None else cur)

    def _unload(self, inst: Instance) -> None:
        old = inst.outstanding
        inst.outstanding -= 1
        inst.trial_in_flight = False
        for m in inst.models:
            r = self.routable.get(m)
            if r is not None:
                r.moved(inst, old)

    def wake(self, inst: Instance) -> None:
        """Refresh ``inst``'s routability and hand its free capacity to waiters of its models."""
        now = time.monotonic()
        self.refresh(inst, now)
        if not self.waiters:
            return
        for m in inst.models:
            q = self.waiters.get(m)
            while q and inst.routable(now):
                fut = q.popleft()
                if not fut.done():
                    self._dispatch(inst, now)
                    fut.set_result(inst)
            if q is not None and not q:
                del self.waiters[m]
