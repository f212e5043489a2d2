"""The launcher's core: one Supervisor per planned process, started in dependency order.

A process starts when each of its dependencies reached its condition (``started`` or
``healthy``); starting a process starts its dependencies first. Stopping everything goes by
dependency depth, deepest first, each level in parallel. State changes are fanned out to the
control API's subscribers as plain dicts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from corral.config import Plan, ProcessPlan
from corral.launcher.backends import BackendWatch, merged
from corral.launcher.ondemand import OnDemandModels
from corral.launcher.openai_services import OpenAIRegistrar
from corral.launcher.state import StateDir
from corral.proc.events import EventHub, State, StateEvent
from corral.proc.spec import ProcessSpec
from corral.proc.supervisor import Supervisor

log = logging.getLogger(__name__)

_STARTED = {State.STARTING, State.HEALTHY, State.UNHEALTHY, State.RESTARTING}
_RUNNING = {State.STARTING, State.HEALTHY, State.UNHEALTHY, State.RESTARTING, State.STOPPING}


def process_spec(p: ProcessPlan, state: StateDir) -> ProcessSpec:
    """The corral.proc spec of a planned process."""
    # A sitter's backend port is held by the backend, which outlives a sitter restart (the new
    # sitter adopts it): only the sitter's own port must be free when the sitter spawns.
    ports = [p.ports["sitter"]] if p.kind == "sitter" else list(p.ports.values())
    return ProcessSpec(
        name=p.name,
        argv=p.argv,
        env=p.env,
        cwd=p.cwd,
        log_file=state.log_file(p.name),
        pid_file=state.pid_file(p.name),
        ports=ports,
        readiness=p.readiness,
        liveness=p.liveness,
        start_timeout_s=p.start_timeout_s,
        settle_s=p.settle_s,
        restart=p.restart,
        # On SIGTERM a sitter first drains its engine (up to drain_timeout_s), then stops it.
        stop_grace_s=p.stop_grace_s + (p.drain_timeout_s if p.kind == "sitter" else 0),
    )


def event_dict(ev: StateEvent) -> dict[str, Any]:
    """A StateEvent as the control API sends it."""
    return {
        "name": ev.name,
        "state": str(ev.state),
        "previous": str(ev.previous),
        "at": ev.at,
        "pid": ev.pid,
        "reason": ev.reason,
        "restarts": ev.restarts,
        "exit_code": ev.exit_code,
    }


def EventFeed() -> EventHub[dict[str, Any]]:  # named as the class it replaced
    """The launcher's feed of state-change dicts (behind /api/events): the last 1000 replayable."""
    return EventHub(1000, history=1000)


class Orchestrator:
    """Owns the supervisors of a plan; every method runs on the launcher's event loop."""

    def __init__(self, plan: Plan, *, on_line: Callable[[str, str], None] | None = None) -> None:
        self.plan = plan
        self.state = StateDir(plan.state_dir)
        self._on_line = on_line
        self.feed = EventFeed()
        self.stopping = False
        self.sups: dict[str, Supervisor] = {}
        for p in plan.processes:
            cb = (lambda line, n=p.name: on_line(n, line)) if on_line else None
            self.sups[p.name] = Supervisor(process_spec(p, self.state), on_line=cb)
        self.waiting: dict[str, str] = {}  # name -> what it waits for
        # Replicas GPU placement refused: they fail with this reason, the rest start.
        self.refused: dict[str, str] = {p.name: p.gpu_error for p in plan.processes if p.gpu_error}
        self.registrar = OpenAIRegistrar(plan)
        self.ondemand = OnDemandModels(self, plan)
        self._starts: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self.busy: dict[str, str] = {}  # process -> what a rolling restart / reload does to it
        # A sitter's views show its backend, as the sitter's /health says (corral.launcher.backends).
        self.backends = BackendWatch(self._sitter_pid, self._backend_changed, plan.client_ssl())
        self._shown: dict[str, tuple[Any, ...]] = {}  # sitter name -> what its last event showed
        for p in plan.processes:
            self._watch_backend(p)

    # -- events ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Start listening to every supervisor (call once, on the running loop)."""
        for name, sup in self.sups.items():
            self._pumps[name] = asyncio.create_task(self._pump(sup))
        self.backends.start()
        self.ondemand.start()

    async def _pump(self, sup: Supervisor) -> None:
        p = self.plan.get(sup.spec.name)
        register = p is not None and OpenAIRegistrar.wants(p)
        async for ev in sup.subscribe():
            if ev.name in self.backends.urls:
                self.backends.poke(ev.name)
                self._publish_sitter(ev.name, event_dict(ev))
            else:
                self.feed.publish(event_dict(ev))
            self._changed.set()
            if register:
                assert p is not None
                try:
                    await self.registrar.on_event(p, ev)
                except Exception:  # registration is best effort; never stop the pump
                    log.exception("registering %s with the registry failed", p.name)

    # -- sitters: their backends' state ----------------------------------------------------------
    def _watch_backend(self, p: ProcessPlan) -> None:
        if p.kind == "sitter" and "sitter" in p.ports:
            self.backends.add(
                p.name, f"{self.plan.scheme}://{_dial(self.plan.host)}:{p.ports['sitter']}/health"
            )

    def _sitter_pid(self, name: str) -> int | None:
        sup = self.sups.get(name)
        return sup.pid if sup is not None and sup.state in _RUNNING else None

    def _backend_changed(self, name: str) -> None:
        if name in self.sups:
            self._publish_sitter(name, None)
            self._changed.set()

    def status(self, name: str) -> dict[str, Any]:
        """``state pid restarts reason last_exit`` as views show them: for a sitter, its
        backend's (with ``sitter``: the sitter's own, ``backend``: the last BackendStatus)."""
        sup = self.sups[name]
        own = {
            "state": str(sup.state),
            "pid": sup.pid,
            "restarts": sup.restarts,
            "reason": sup.reason,
            "last_exit": sup.last_exit,
        }
        if name not in self.backends.urls:
            return own
        backend = self.backends.get(name)
        if backend is None and sup.state != State.FAILED and self.ondemand.parked(name):
            own["state"] = "stopped"  # a parked sitter (starting or up): its engine does not run
        return merged(own, backend)

    def _publish_sitter(self, name: str, ev: dict[str, Any] | None) -> None:
        """Publish a sitter's change as the change of what its views show (its backend's)."""
        st = self.status(name)
        key = (st["state"], st["pid"], st["restarts"], st["reason"], st["last_exit"], st["sitter"]["state"])
        previous = self._shown.get(name)
        if key == previous:
            return
        self._shown[name] = key
        backend = st["backend"]
        out = {
            "name": name,
            "state": st["state"],
            "previous": previous[0] if previous else (ev or {}).get("previous", "stopped"),
            "at": time.time(),
            "pid": st["pid"],
            "reason": st["reason"],
            "restarts": st["restarts"],
            "exit_code": st["last_exit"] if st["state"] in ("stopped", "failed", "restarting") else None,
            "sitter": st["sitter"],
        }
        if st["state"] == "failed":
            out["tail"] = backend.last_lines if backend else self.sups[name].last_lines
        self.feed.publish(out)

    def _note(self, name: str, state: str, reason: str | None) -> None:
        """Publish a launcher-level change (waiting for dependencies) like a supervisor event."""
        sup = self.sups[name]
        self._shown.pop(name, None)  # the next sitter/backend change is news again
        self.feed.publish(
            {
                "name": name,
                "state": state,
                "previous": str(sup.state),
                "at": time.time(),
                "pid": sup.pid,
                "reason": reason,
                "restarts": sup.restarts,
                "exit_code": None,
            }
        )
        self._changed.set()

    async def _changed_wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    # -- start ----------------------------------------------------------------------------------
    def names(self, target: str) -> list[str]:
        """Process names for a process name, a group, or ``all``; [] when unknown."""
        if target == "all":
            return [p.name for p in self.plan.processes]
        if target in self.sups:
            return [target]
        return self.plan.groups().get(target, [])

    def start(self, name: str) -> asyncio.Task[None]:
        """Start ``name`` once its dependencies are ready (starting them too); idempotent."""
        task = self._starts.get(name)
        if task is None or task.done():
            task = asyncio.create_task(self._start_when_ready(name), name=f"start {name}")
            self._starts[name] = task
        return task

    def start_all(self) -> None:
        """Start every auto_start process, and any process a previous launcher left running."""
        self.stopping = False
        for p in self.plan.processes:
            if p.auto_start or self._left_running(p.name):
                self.start(p.name)

    def _left_running(self, name: str) -> bool:
        from corral.proc import pidfile

        spec = self.sups[name].spec
        return spec.pid_file is not None and pidfile.adoptable(spec.pid_file, spec.argv) is not None

    async def _start_when_ready(self, name: str) -> None:
        p = self.plan.get(name)
        assert p is not None
        for d in p.depends_on:
            if self.sups[d.name].state not in _RUNNING:
                self.start(d.name)
        for d in p.depends_on:
            self.waiting[name] = f"waiting for {d.name} ({d.condition})"
            self._note(name, "starting", self.waiting[name])
            problem = await self._reached(d.name, d.condition)
            if problem:
                self.waiting.pop(name, None)
                self._note(name, "stopped", f"not started: {d.name} {problem}")
                return
        self.waiting.pop(name, None)
        if name in self.refused:
            self._note(name, "failed", self.refused[name])
            return
        if not self.stopping:
            await self.sups[name].start()

    async def _reached(self, name: str, condition: str) -> str | None:
        """None once ``name`` reached ``condition``; else why it never will."""
        sup = self.sups[name]
        while True:
            if name in self.refused:
                return f"failed: {self.refused[name]}"
            if condition == "started" and sup.state in _STARTED:
                return None
            if sup.state == State.HEALTHY:
                return None
            shown = self.status(name)  # a sitter's backend may have failed while the sitter runs
            if shown["state"] == "failed":
                return f"failed: {shown['reason']}"
            if self.stopping:
                return "is stopping"
            pending = self._starts.get(name)
            if sup.state == State.STOPPED and (pending is None or pending.done()):
                return "is stopped"
            await self._changed_wait()

    # -- stop -----------------------------------------------------------------------------------
    async def stop(self, names: list[str]) -> None:
        """Stop ``names``, dependents before their dependencies."""
        for n in names:
            self.ondemand.parking.parked.discard(n)
            task = self._starts.pop(n, None)
            if task is not None and not task.done():
                task.cancel()
            if self.waiting.pop(n, None) is not None:
                self._note(n, "stopped", "start cancelled")
        levels = self.plan.levels()
        for level in sorted({levels[n] for n in names}, reverse=True):
            batch = [
                self.sups[n] for n in names if levels[n] == level and self.sups[n].state != State.STOPPED
            ]
            await asyncio.gather(*(s.stop() for s in batch))

    async def stop_all(self) -> None:
        """Stop everything (no dependency waits any more, nothing restarts)."""
        self.stopping = True
        self._changed.set()
        await self.stop([p.name for p in self.plan.processes])

    async def restart(self, names: list[str]) -> None:
        """Restart running ones in place; start stopped ones (after their dependencies)."""
        running = [n for n in names if self.sups[n].state in _RUNNING]
        for n in running:
            self.ondemand.parking.parked.discard(n)  # a sitter restarts with its engine
        await asyncio.gather(*(self.sups[n].restart() for n in running))
        for n in names:
            if n not in running:
                self.start(n)

    async def close(self, *, detach: bool = False) -> None:
        """Stop (or just let go of, with ``detach``) every process and the event pumps."""
        await self.ondemand.close(deregister=not detach)
        if detach:
            self.stopping = True
            await asyncio.gather(*(s.detach() for s in self.sups.values()))
        else:
            await self.stop_all()
        for t in self._pumps.values():
            t.cancel()
        await self.backends.close()
        for t in self._starts.values():
            t.cancel()
        # Detached (adoption later): the registrations lapse with their lease, as a sitter's do.
        await self.registrar.close(deregister=not detach)

    # -- changing the plan (reload) -----------------------------------------------------------
    def set_plan(self, plan: Plan) -> None:
        """Adopt ``plan`` (same processes or a superset/subset handled by add/replace/forget):
        start order, groups and dependency levels come from it from now on."""
        self.plan = plan
        self.ondemand.update(plan)

    def add(self, p: ProcessPlan) -> None:
        """Supervise a new process (stopped; ``start`` it). The plan must already list it."""
        self.sups[p.name] = Supervisor(process_spec(p, self.state), on_line=self._line_cb(p.name))
        self._pumps[p.name] = asyncio.create_task(self._pump(self.sups[p.name]))
        self._watch_backend(p)
        if p.gpu_error:
            self.refused[p.name] = p.gpu_error

    def replace(self, p: ProcessPlan) -> None:
        """Swap a stopped process's supervisor for one running ``p`` (its new settings)."""
        old = self.sups[p.name]
        if old.state not in (State.STOPPED, State.FAILED):
            raise RuntimeError(f"{p.name} must be stopped before it is replaced (it is {old.state})")
        self.forget(p.name)
        self.add(p)

    def forget(self, name: str) -> None:
        """Stop tracking a stopped process (removed from the config)."""
        task = self._pumps.pop(name, None)
        if task is not None:
            task.cancel()
        self.sups.pop(name, None)
        self.backends.remove(name)
        self._shown.pop(name, None)
        self._starts.pop(name, None)
        self.refused.pop(name, None)
        self.waiting.pop(name, None)

    def _line_cb(self, name: str) -> Callable[[str], None] | None:
        on_line = self._on_line
        return (lambda line: on_line(name, line)) if on_line else None

    # -- views ----------------------------------------------------------------------------------
    def all_healthy(self) -> bool:
        """True when every process that should run (auto_start or started) is healthy."""
        return all(self.status(n)["state"] == "healthy" for n in self.expected())

    def expected(self) -> list[str]:
        """Processes that should be up now (an idle on-demand replica's parked engine should not)."""
        return [
            p.name
            for p in self.plan.processes
            if (p.name in self._starts or self.sups[p.name].state != State.STOPPED)
            and not self.ondemand.parked(p.name)
        ]


def _dial(host: str) -> str:
    """Where the launcher reaches a server bound to ``host`` (loopback for a wildcard)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
