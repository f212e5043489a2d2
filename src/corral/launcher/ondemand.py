"""On-demand models, the launcher's side: announce them, wake them, unload them when idle.

Each ``[[backend]]`` with ``start = "on_demand"`` becomes one registry entry of kind ``model``
(see ``corral.router.ondemand`` for the router's side and DESIGN "A fleet that changes"):

- ``url`` is its wake URL on the control API (``POST /api/models/{entry}/wake``, control token);
- ``state`` follows its replicas: ``ready`` (one is healthy), ``loading``, ``failed`` (+ reason),
  ``stopped``, or ``draining`` while an idle unload waits for the router's last request;
- ``metadata`` has ``replicas``, ``replicas_ready``, ``reason``, ``cold_start_timeout_s`` and
  ``generation``, bumped by every wake so a router never takes an older failure as the answer.

Idle unload: every second the launcher reads the router's ``GET /admin/models`` (per model:
requests in flight and held, seconds since the last one ended). A model idle for
``idle_unload_s`` is marked ``draining`` (the router then holds new requests instead of sending
them), and once the router reports that state with nothing in flight its replicas beyond
``keep_warm`` are parked: their engines stop, their sitters stay up (``corral.launcher.parking``),
so the next wake pays the engine's start and nothing else. A wake during the drain cancels the
unload. The decision is the pure :func:`idle_to_unload`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.config.plan import parks_at_start
from corral.launcher.ondemand_gpu import budget
from corral.launcher.parking import Parking
from corral.proc.events import State

if TYPE_CHECKING:
    from corral.config import Plan, ProcessPlan
    from corral.launcher.orchestrator import Orchestrator
    from corral.registry import Heartbeater, RegistryClient

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
POLL_S = 1.0
DRAIN_TIMEOUT_S = 30.0
_UP = {State.STARTING, State.HEALTHY, State.UNHEALTHY, State.RESTARTING}
_STATES = {str(s) for s in State}


class WakeRefused(Exception):
    """The model cannot be started now (e.g. its GPUs lack memory); the message says why."""


@dataclass
class Group:
    """One on-demand ``[[backend]]`` entry: its replicas and settings."""

    entry: str
    procs: list[ProcessPlan]
    models: list[str]
    keep_warm: int
    idle_unload_s: float | None
    cold_start_timeout_s: float
    generation: int = 0
    draining: bool = False
    last_used: float = field(default_factory=time.monotonic)  # for LRU eviction

    @property
    def names(self) -> list[str]:
        """Process names of the replicas, in replica order."""
        return [p.name for p in self.procs]


def group_state(states: Iterable[tuple[State, str | None]], draining: bool) -> tuple[str, int, str | None]:
    """(model state, replicas ready, reason) from the replicas' (state, reason) pairs (pure)."""
    pairs = list(states)
    ready = sum(1 for s, _ in pairs if s == State.HEALTHY)
    if draining:
        return "draining", ready, None
    if ready:
        return "ready", ready, None
    if any(s in _UP for s, _ in pairs):
        return "loading", 0, None
    failed = [r for s, r in pairs if s == State.FAILED]
    if failed:
        return "failed", 0, failed[0] or "failed"
    return "stopped", 0, None


def idle_to_unload(
    groups: Iterable[Group], states: dict[str, str], activity: dict[str, dict[str, Any]]
) -> list[Group]:
    """Groups to unload now (pure): ready or draining, with more replicas up than ``keep_warm``,
    and for each of their models nothing in flight or held and idle for ``idle_unload_s``."""
    out = []
    for g in groups:
        if g.idle_unload_s is None or states.get(g.entry) not in ("ready", "draining"):
            continue
        acts = [activity.get(m) for m in g.models]
        if any(a is None for a in acts):
            continue  # the router does not know the model yet: never unload blind
        if all(a["in_flight"] == 0 and a["held"] == 0 and a["idle_s"] >= g.idle_unload_s for a in acts if a):
            out.append(g)
    return out


def groups_of(plan: Plan, old: dict[str, Group]) -> dict[str, Group]:
    """The plan's on-demand entries as groups (pure); an entry already in ``old`` keeps its
    wake generation, LRU clock and drain flag."""
    groups: dict[str, Group] = {}
    for p in plan.processes:
        if p.start != "on_demand":
            continue
        g = groups.get(p.entry)
        if g is None:
            g = groups[p.entry] = Group(
                p.entry, [], list(p.models), p.keep_warm, p.idle_unload_s, p.cold_start_timeout_s
            )
            if (was := old.get(p.entry)) is not None:
                g.generation, g.last_used, g.draining = was.generation, was.last_used, was.draining
        g.procs.append(p)
    return groups


class OnDemandModels:
    """Owns the registry entries of the on-demand models and their wake / unload cycle."""

    def __init__(self, orch: Orchestrator, plan: Plan) -> None:
        self.orch = orch
        self.plan = plan
        self.groups = groups_of(plan, {})
        registry = plan.get("registry")
        router = plan.get("router")
        self.registry_token = registry.token if registry else None
        self.router_token = router.token if router else None
        self.beats: dict[str, Heartbeater] = {}
        self._client: RegistryClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._idle_task: asyncio.Task[None] | None = None
        self._waking: set[asyncio.Task[None]] = set()  # sitters starting, to unpark once up
        self.parking = Parking(plan.client_ssl())
        self._index()
        self._unloading: dict[str, asyncio.Task[None]] = {}
        self.evicting: dict[str, asyncio.Task[None]] = {}
        self.states: dict[str, str] = {}
        self.activity: dict[str, dict[str, Any]] | None = None  # the router's, last read
        self._session: Any = None  # aiohttp.ClientSession, made on the loop
        url = plan.router_url
        self._activity_url = url + "/admin/models" if url else None
        self._router_headers = {"Authorization": f"Bearer {self.router_token}"} if self.router_token else {}

    def _index(self) -> None:
        self.by_model = {m: g for g in self.groups.values() for m in g.models}
        self.by_proc = {p.name: g for g in self.groups.values() for p in g.procs}
        # Replicas whose sitter starts with the engine parked (beyond keep_warm): config/plan.py.
        procs = [p for g in self.groups.values() for p in g.procs]
        self.park_at_start = {p.name for p in procs if parks_at_start(p.start, p.replica, p.keep_warm)}

    # -- lifecycle -------------------------------------------------------------------------------
    def wake_url(self, entry: str) -> str:
        """Where a router wakes ``entry``: the control API, as reachable from the router."""
        host = self.plan.host if self.plan.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.plan.dashboard_port}/api/models/{entry}/wake"

    def start(self) -> None:
        """Announce every group and follow the orchestrator (call once, on the running loop)."""
        if self.plan.registry_url is None:
            return
        from corral.registry import RegistryClient

        self._client = RegistryClient(
            self.plan.registry_url, token=self.registry_token, ssl=self.plan.client_ssl()
        )
        for g in self.groups.values():
            self._announce(g)
        self._tasks.append(asyncio.create_task(self._follow()))
        self._idle_loop_if_needed()

    def _announce(self, g: Group) -> None:
        from corral.registry import Heartbeater

        assert self._client is not None
        state, ready, reason = self._state(g)
        self.states[g.entry] = state
        hb = Heartbeater(
            self._client,
            service=g.entry,
            url=self.wake_url(g.entry),
            models=g.models,
            kind="model",
            state=state,
            metadata=self._meta(g, ready, reason),
            interval_s=HEARTBEAT_S,
        )
        hb.start()
        self.beats[g.entry] = hb

    def _idle_loop_if_needed(self) -> None:
        if self._idle_task is None and self.plan.router_url:
            if any(g.idle_unload_s is not None for g in self.groups.values()):
                self._idle_task = asyncio.create_task(self._idle_loop())
                self._tasks.append(self._idle_task)

    def update(self, plan: Plan) -> None:
        """Follow a reloaded plan: on-demand entries added, changed (replicas, models, settings;
        a wake's generation and the LRU clock carry over) or removed (deregistered)."""
        self.plan = plan
        old, self.groups = self.groups, groups_of(plan, self.groups)
        self._index()
        if self._client is None:
            return
        for entry in old.keys() - self.groups.keys():
            for tasks in (self._unloading, self.evicting):
                if (t := tasks.pop(entry, None)) is not None:
                    t.cancel()
            self.states.pop(entry, None)
            if (hb := self.beats.pop(entry, None)) is not None:
                self._tasks.append(asyncio.create_task(hb.stop(deregister=True)))
        for g in self.groups.values():
            if g.entry not in self.beats:
                self._announce(g)
            else:
                self.beats[g.entry].set(models=g.models)
                self.publish(g)
        self._idle_loop_if_needed()

    async def close(self, deregister: bool = True) -> None:
        """Stop the loops and heartbeats (deregistering the entries unless told not to)."""
        tasks = [*self._tasks, *self._unloading.values(), *self.evicting.values(), *self._waking]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(hb.stop(deregister=deregister) for hb in self.beats.values()))
        if self._session is not None:
            await self._session.close()
        await self.parking.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()

    # -- state -----------------------------------------------------------------------------------
    def _state(self, g: Group) -> tuple[str, int, str | None]:
        # The backend's own state as its sitter reports it (a sitter up with a failed engine is
        # a failed model), falling back to the sitter process's state.
        pairs = []
        for n in g.names:
            if self.parked(n) or n not in self.orch.sups:  # parked, or not supervised yet
                pairs.append((State.STOPPED, None))
                continue
            st = self.orch.status(n)
            state = st.get("state")
            pairs.append((State(state) if state in _STATES else self.orch.sups[n].state, st.get("reason")))
        return group_state(pairs, g.draining)

    def _meta(self, g: Group, ready: int, reason: str | None) -> dict[str, Any]:
        return {
            "launcher": True,
            "replicas": len(g.procs),
            "replicas_ready": ready,
            "reason": reason,
            "cold_start_timeout_s": g.cold_start_timeout_s,
            "generation": g.generation,
            "keep_warm": g.keep_warm,
            "idle_unload_s": g.idle_unload_s,
        }

    def publish(self, g: Group) -> None:
        """Push the group's current state to the registry (only when it changed)."""
        state, ready, reason = self._state(g)
        self.states[g.entry] = state
        hb = self.beats.get(g.entry)
        if hb is not None:
            meta = self._meta(g, ready, reason)
            if hb.state != state or hb.metadata != meta:
                hb.set(state=state, metadata=meta)

    def view(self) -> list[dict[str, Any]]:
        """Every on-demand group with its live state (control API, dashboard)."""
        out = []
        for g in self.groups.values():
            state, ready, reason = self._state(g)
            out.append(
                {
                    "entry": g.entry,
                    "models": g.models,
                    "state": state,
                    "replicas": len(g.procs),
                    "replicas_ready": ready,
                    "reason": reason,
                    "keep_warm": g.keep_warm,
                    "idle_unload_s": g.idle_unload_s,
                    "generation": g.generation,
                }
            )
        return out

    async def _follow(self) -> None:
        sub = self.orch.feed.subscribe()
        try:
            for g in self.groups.values():
                self.publish(g)
            while True:
                ev = await sub.get(HEARTBEAT_S)
                if ev is not None and (grp := self.by_proc.get(ev["name"])) is not None:
                    self.publish(grp)
        finally:
            sub.close()

    # -- wake ------------------------------------------------------------------------------------
    def find(self, name: str) -> Group | None:
        """The group of an entry name or of one of its models."""
        return self.groups.get(name) or self.by_model.get(name)

    async def wake(self, name: str) -> dict[str, Any]:
        """Start the replicas of ``name`` (entry or model) that are not up; idempotent.

        Returns the state and the wake's ``generation``. Raises KeyError for an unknown name and
        :class:`WakeRefused` when it cannot start.
        """
        g = self.find(name)
        if g is None:
            raise KeyError(name)
        task = self._unloading.pop(g.entry, None)
        if task is not None:
            task.cancel()  # a request arrived while draining: keep what runs
        g.draining = False
        g.last_used = time.monotonic()
        if g.entry not in self.evicting:
            if any(p.gpu_memory_gb for p in g.procs):
                await self._read_activity()  # who is idle right now, not a second ago
            verdict = await asyncio.to_thread(budget, self, g)
            if verdict.refused:
                raise WakeRefused(f"model {g.entry} does not fit: {verdict.refused}")
            g.generation += 1
            if verdict.evict:
                log.info("unloading %s to make room on the GPUs for %s", ", ".join(verdict.evict), g.entry)
                self.evicting[g.entry] = asyncio.create_task(self._evict_then_start(g, verdict.evict))
            else:
                await self._start_replicas(g)
        self.publish(g)
        return {"entry": g.entry, "state": self.states.get(g.entry), "generation": g.generation}

    async def _start_replicas(self, g: Group) -> None:
        """Start every replica whose engine is not up: unpark it where its sitter runs (the
        engine's start only), start the sitter where it does not."""
        parked = [n for n in g.names if self.orch.sups[n].state in _UP and not self.engine_up(n)]
        for n in g.names:
            if self.orch.sups[n].state not in _UP:
                self.orch.start(n)
                if n in self.park_at_start:  # it comes up parked: start its engine once it answers
                    task = asyncio.create_task(self._unpark_when_up(n, g.cold_start_timeout_s))
                    self._waking.add(task)
                    task.add_done_callback(self._waking.discard)
                else:
                    self.parking.parked.discard(n)
        await asyncio.gather(*(self.unpark(n) for n in parked))

    async def _unpark_when_up(self, name: str, timeout_s: float) -> None:
        try:
            state = await self.orch.sups[name].wait_for(State.HEALTHY, State.FAILED, timeout=timeout_s)
        except TimeoutError as exc:
            log.warning("%s", exc)
            return
        if state == State.HEALTHY:
            await self.unpark(name)

    def engine_up(self, name: str) -> bool:
        """Whether ``name``'s engine runs or is on its way (its sitter may run with it parked)."""
        sup = self.orch.sups.get(name)  # None: a reload lists it before it is supervised
        if sup is None or sup.state not in _UP:
            return False
        st = self.orch.backends.get(name)
        if st is None:  # its sitter has not answered (yet): a sitter starts parked or not
            return name not in self.parking.parked and name not in self.park_at_start
        return st.state not in ("stopped", "failed")

    def parked(self, name: str) -> bool:
        """Whether ``name``'s engine is stopped on purpose (idle unload, or not woken yet)."""
        return (name in self.parking.parked or name in self.park_at_start) and not self.engine_up(name)

    async def start_process(self, name: str) -> bool:
        """Unpark ``name`` when it is a parked on-demand replica (an operator's start); False
        when it is not one (start it the usual way)."""
        if not self.parked(name):
            return False
        await self.unpark(name)
        return True

    async def unpark(self, name: str) -> None:
        """Start ``name``'s engine through its running sitter (a no-op if it runs already)."""
        self.parking.parked.discard(name)
        got = await self.parking.call(self.orch.backends.urls[name], "start", self._token(name))
        if isinstance(got, str):
            log.warning("could not start the engine of %s through its sitter (%s); restarting it", name, got)
            await self.orch.restart([name])
        else:
            self.orch.backends.put(name, got)

    def _token(self, name: str) -> str | None:
        p = self.orch.plan.get(name)
        return p.token if p is not None else None

    async def _park(self, name: str) -> None:
        got = await self.parking.call(self.orch.backends.urls[name], "stop", self._token(name))
        if isinstance(got, str):
            log.warning("could not stop the engine of %s through its sitter (%s); stopping it", name, got)
            await self.orch.stop([name])
        else:
            self.parking.parked.add(name)
            self.orch.backends.put(name, got)

    async def _evict_then_start(self, g: Group, evict: list[str]) -> None:
        try:
            await asyncio.gather(*(self._unload(self.groups[e], everything=True) for e in evict))
            await self._start_replicas(g)
        finally:
            self.evicting.pop(g.entry, None)
            self.publish(g)

    # -- idle unload -----------------------------------------------------------------------------
    async def _read_activity(self) -> dict[str, dict[str, Any]] | None:
        import aiohttp

        if self._activity_url is None:
            return None
        if self._session is None:
            from corral.launcher.http_client import session

            self._session = session(self.plan.client_ssl(), timeout=aiohttp.ClientTimeout(total=2.0))
        act = await _activity(self._session, self._activity_url, self._router_headers)
        if act is not None:
            self.activity = act
        return act

    async def _idle_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            activity = await self._read_activity()
            if activity is None:
                continue
            for g in self.groups.values():
                if any((activity.get(m) or {}).get("in_flight") for m in g.models):
                    g.last_used = time.monotonic()
            for g in idle_to_unload(self.groups.values(), self.states, activity):
                up = [n for n in g.names[g.keep_warm :] if self.engine_up(n)]
                if up and g.entry not in self._unloading and g.entry not in self.evicting:
                    self._unloading[g.entry] = asyncio.create_task(self._unload(g))

    async def _unload(self, g: Group, everything: bool = False) -> None:
        """Drain (the router holds new requests), wait for nothing in flight, stop, publish.

        Stops the replicas beyond ``keep_warm`` (all of them with ``everything``).
        """
        try:
            g.draining = True
            self.publish(g)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while self._activity_url is not None and time.monotonic() < deadline:
                act = await self._read_activity() or {}
                seen = [act.get(m) or {} for m in g.models]
                if all(a.get("state") == "draining" and a.get("in_flight") == 0 for a in seen):
                    break
                await asyncio.sleep(0.05)
            keep = 0 if everything else g.keep_warm
            log.info("unloading on-demand model %s (keeping %d replicas)", g.entry, keep)
            up = [n for n in g.names[keep:] if self.engine_up(n)]
            await asyncio.gather(*(self._park(n) for n in up if n in self.orch.backends.urls))
            await self.orch.stop([n for n in up if n not in self.orch.backends.urls])
        finally:
            g.draining = False
            self._unloading.pop(g.entry, None)
            self.publish(g)


async def _activity(s: Any, url: str, headers: dict[str, str]) -> dict[str, dict[str, Any]] | None:
    import aiohttp

    try:
        async with s.get(url, headers=headers) as r:
            if r.status != 200:
                return None
            doc = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
        return None
    models = doc.get("models") if isinstance(doc, dict) else None
    return models if isinstance(models, dict) else None
