"""Rolling restart: one replica at a time, drain -> restart -> healthy and routed -> the next.

A request in flight on a replica finishes before it restarts (up to ``drain_timeout_s``) and the
router sends it nothing new meanwhile (registry ``draining``), so a service with two or more
replicas restarts without failing a request. A single replica is covered by a *surge*: a copy on
a spare port serves while it restarts (sitters without GPUs only); otherwise the caller must
accept the gap with ``force``. Reload uses the same steps with the replica's new plan.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from corral.errors import CorralError
from corral.launcher.orchestrator import process_spec
from corral.proc.events import State
from corral.proc.supervisor import Supervisor

if TYPE_CHECKING:
    from corral.config import ProcessPlan
    from corral.launcher.drain import Drainer
    from corral.launcher.orchestrator import Orchestrator

log = logging.getLogger(__name__)

_RUNNING = {State.STARTING, State.HEALTHY, State.UNHEALTHY, State.RESTARTING}
_ROUTED_TIMEOUT_S = 60.0


class RollingError(CorralError):
    """A rolling restart refused to start, or a replica did not come back."""


@dataclass
class ReplicaStep:
    """What restarting one replica took."""

    name: str
    drain_s: float = 0.0
    in_flight_left: int | None = None
    restart_s: float = 0.0  # stop + start + healthy + routed again
    total_s: float = 0.0
    surge: str | None = None  # the surge copy that served meanwhile
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON view."""
        return asdict(self)


def replicas_of(orch: Orchestrator, target: str) -> list[str]:
    """Process names of ``target``: a process, a config entry (its replicas) or a group."""
    if target in orch.sups:
        return [target]
    by_entry = [p.name for p in orch.plan.processes if p.entry == target and p.kind in ("sitter", "service")]
    return by_entry or orch.plan.groups().get(target, [])


def _spare_port(host: str) -> int | None:
    """A port p with p and p + 1 both free on ``host`` (a sitter needs both), or None."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((host, port))
                b.bind((host, port + 1))
            return port
        except OSError:
            continue
    return None


def surge_plan(p: ProcessPlan, port: int) -> ProcessPlan | None:
    """A copy of sitter replica ``p`` on ``port`` (its sitter on port + 1), or None when ``p``
    cannot have one (not a sitter, or it holds GPUs a copy would need too)."""
    if p.kind != "sitter" or p.sitter is None or p.gpus:
        return None
    from corral.config.probes import http_probe
    from corral.settings import Probe

    name = f"{p.name}-surge"
    state_dir = str(p.sitter.state_dir).removesuffix(p.name) + name
    # A copy serves while the original restarts: never parked (an on-demand replica's is).
    settings = p.sitter.model_copy(update={"port": port, "name": name, "state_dir": state_dir, "park": False})
    file = f"{state_dir}/settings-{settings.digest()}.json"
    host = settings.host
    scheme = "https" if settings.tls_cert else "http"  # the sitter API; the engine stays http
    return p.model_copy(
        update={
            "name": name,
            "argv": [*p.argv[:-1], file],
            "ports": {"api": port, "sitter": port + 1},
            "url": f"http://{host}:{port}",
            "readiness": http_probe(f"{scheme}://{host}:{port + 1}/health", ready=True),
            "liveness": Probe(tcp=f"{host}:{port + 1}", period_s=5.0),
            "files": {file: settings.file_text()},
            "sitter": settings,
        }
    )


class Rolling:
    """Rolling restarts (and reload's replacements) over an orchestrator."""

    def __init__(self, orch: Orchestrator, drainer: Drainer) -> None:
        self.orch = orch
        self.drainer = drainer
        self._lock = asyncio.Lock()  # one fleet change at a time

    @property
    def busy(self) -> bool:
        """Whether a rolling restart or reload runs now."""
        return self._lock.locked()

    async def restart(self, target: str, *, force: bool = False) -> list[ReplicaStep]:
        """Restart every replica of ``target`` in turn without failing requests (see module)."""
        names = replicas_of(self.orch, target)
        if not names:
            raise RollingError(f"no process, service or group named {target!r}")
        async with self._lock:
            return await self.roll(names, force=force)

    async def roll(
        self, names: list[str], *, force: bool = False, new: dict[str, ProcessPlan] | None = None
    ) -> list[ReplicaStep]:
        """Replace ``names`` one by one (by ``new[name]`` when given: reload); caller holds the lock
        or owns the orchestrator."""
        # A parked on-demand replica serves nothing: no surge copy to keep its (absent) traffic.
        running = [
            n for n in names if self.orch.sups[n].state in _RUNNING and not self.orch.ondemand.parked(n)
        ]
        surge: ProcessPlan | None = None
        if len(running) == 1 and len(names) == 1:
            port = _spare_port(self.orch.plan.host)
            base = (new or {}).get(names[0]) or self.orch.plan.get(names[0])
            surge = surge_plan(base, port) if base is not None and port is not None else None
            if surge is None and not force:
                raise RollingError(
                    f"{names[0]} is the only replica and cannot have a surge copy (GPUs, or not a "
                    "backend): it will be unavailable while it restarts; pass --force to accept that"
                )
        steps = []
        for name in names:
            steps.append(await self._one(name, (new or {}).get(name), surge))
        return steps

    async def _one(self, name: str, new: ProcessPlan | None, surge: ProcessPlan | None) -> ReplicaStep:
        orch = self.orch
        began = time.monotonic()
        step = ReplicaStep(name)
        p = orch.plan.get(name)
        assert p is not None
        copy: Supervisor | None = None
        awake = not orch.ondemand.parked(name)  # a parked on-demand replica comes back parked
        try:
            if orch.sups[name].state not in _RUNNING:
                step.note = "was not running: started"
                await self._start(new or p, replace=new is not None)
                step.total_s = step.restart_s = time.monotonic() - began
                return step
            if surge is not None and awake:
                orch.busy[name] = "surge copy starting"
                copy = await self._start_surge(surge)
                step.surge = surge.name
            orch.busy[name] = "draining"
            report = await self.drainer.drain(p, p.drain_timeout_s)
            step.drain_s, step.in_flight_left = report.waited_s, report.in_flight_left
            orch.busy[name] = "restarting"
            t = time.monotonic()
            if new is not None:
                await orch.stop([name])
                await self._start(new, replace=True, awake=awake)
            else:
                from corral.launcher.server import write_process_files

                write_process_files(p)
                await orch.sups[name].restart()
                await self._healthy(p, awake)
            step.restart_s = time.monotonic() - t
        finally:
            orch.busy.pop(name, None)
            if copy is not None and surge is not None:
                await self.drainer.drain(surge, surge.drain_timeout_s)
                await copy.stop()
        step.total_s = time.monotonic() - began
        log.info("rolling: %s done in %.2fs (drain %.2fs)", name, step.total_s, step.drain_s)
        return step

    async def _start(self, p: ProcessPlan, *, replace: bool, awake: bool = False) -> None:
        from corral.launcher.server import write_process_files

        if replace:
            self.orch.set_plan(
                self.orch.plan.model_copy(
                    update={"processes": [p if q.name == p.name else q for q in self.orch.plan.processes]}
                )
            )
            self.orch.replace(p)
        write_process_files(p)
        self.orch.start(p.name)
        await self._healthy(p, awake)

    async def _healthy(self, p: ProcessPlan, awake: bool = False) -> None:
        """Wait until ``p`` is healthy and routed; a parked on-demand replica is done once its
        sitter is up, unless it was ``awake`` before the restart (then its engine starts too)."""
        sup = self.orch.sups[p.name]
        try:
            got = await sup.wait_for(State.HEALTHY, State.FAILED, timeout=p.start_timeout_s)
        except TimeoutError as exc:
            raise RollingError(str(exc)) from None
        if got == State.FAILED:
            raise RollingError(f"{p.name} failed after the restart: {sup.reason}")
        if p.name in self.orch.ondemand.park_at_start:  # its sitter starts with the engine parked
            if not awake:
                return  # its engine waits for the model's next request
            await self.orch.ondemand.unpark(p.name)  # it served before the restart: serve again
        routed = p.kind == "sitter" or (p.kind == "service" and p.openai)
        if routed and p.url is not None and not await self.drainer.wait_routable(p.url, _ROUTED_TIMEOUT_S):
            raise RollingError(f"{p.name} is healthy but the router did not take it back in time")

    async def _start_surge(self, surge: ProcessPlan) -> Supervisor:
        from corral.launcher.server import write_process_files

        write_process_files(surge)
        sup = Supervisor(process_spec(surge, self.orch.state))
        await sup.start()
        try:
            got = await sup.wait_for(State.HEALTHY, State.FAILED, timeout=surge.start_timeout_s)
            if got == State.FAILED:
                raise RollingError(f"the surge copy {surge.name} failed: {sup.reason}")
            assert surge.url is not None
            if not await self.drainer.wait_routable(surge.url, _ROUTED_TIMEOUT_S):
                raise RollingError(f"the surge copy {surge.name} was not routed in time")
        except BaseException:
            await sup.stop()
            raise
        return sup
