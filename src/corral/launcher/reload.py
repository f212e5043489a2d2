"""Reload: read the config again, diff it with the running plan, apply only the difference.

Pure part: :func:`diff_plans` compares two plans by process name. A process is *changed* when
anything its process would see differs (argv, which names its settings file and so every sitter
setting, env, cwd, ports, probes, GPUs, restart policy, files); bookkeeping fields (dependencies,
auto_start, drain timeout, group, tags, where in the file) are taken over without a restart.

Applying (:meth:`Reloader.apply`), with the steps rolling restarts use: added processes start
(dependencies first); changed ones are replaced replica by replica (drain -> stop -> start the
new one -> healthy and routed; a single replica gets a surge copy when it can); removed ones are
drained, then stopped; unchanged ones are not touched (same PIDs). A config that does not load
or resolve changes nothing (ConfigError). Addresses corral itself uses (state dir, host,
dashboard, registry and router URLs) cannot change here: that takes ``corral down && corral up``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.errors import ConfigError

if TYPE_CHECKING:
    from corral.config import Plan, ProcessPlan
    from corral.launcher.orchestrator import Orchestrator
    from corral.launcher.rolling import ReplicaStep, Rolling

log = logging.getLogger(__name__)

# Taken over without touching the process.
_SOFT = {
    "depends_on",
    "auto_start",
    "drain_timeout_s",
    "group",
    "tags",
    "source",
    "entry",
    "replica",
    "models",
}

# The sitter's settings that take effect at its next start, without a restart of their own.
_SOFT_SITTER = {"drain_timeout_s"}


@dataclass
class PlanDiff:
    """Process names by what a reload does to them; ``changes``: name -> the fields that differ."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    changes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing to start, stop or replace."""
        return not (self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": [{"name": n, "fields": self.changes.get(n, [])} for n in self.changed],
            "unchanged": self.unchanged,
        }


def _fields(p: ProcessPlan) -> dict[str, Any]:
    doc = p.model_dump(exclude=_SOFT)
    if p.sitter is not None:  # compare what the sitter is told, not the digest in argv
        doc["argv"] = p.argv[:-1]
        doc["files"] = {}
        doc["sitter"] = p.sitter.model_dump(exclude=_SOFT_SITTER)
    return doc


def changed_fields(old: ProcessPlan, new: ProcessPlan) -> list[str]:
    """The fields whose change means the process must be replaced ([] = keep it running)."""
    a, b = _fields(old), _fields(new)
    out = [k for k in a if a[k] != b.get(k)]
    if "sitter" in out and old.sitter is not None and new.sitter is not None:
        sa, sb = old.sitter.model_dump(exclude=_SOFT_SITTER), new.sitter.model_dump(exclude=_SOFT_SITTER)
        out = [k for k in out if k != "sitter"] + [f"sitter.{k}" for k in sa if sa[k] != sb.get(k)]
    return out


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    """What a reload from ``old`` to ``new`` does, by process name (in ``new``'s start order)."""
    d = PlanDiff()
    for p in new.processes:
        was = old.get(p.name)
        if was is None:
            d.added.append(p.name)
            continue
        fields = changed_fields(was, p)
        if fields:
            d.changed.append(p.name)
            d.changes[p.name] = fields
        else:
            d.unchanged.append(p.name)
    d.removed = [p.name for p in old.processes if new.get(p.name) is None]
    return d


def check_fixed(old: Plan, new: Plan) -> None:
    """ConfigError when ``new`` moves something a running launcher cannot move."""
    fixed = {
        "corral.state_dir": (old.state_dir, new.state_dir),
        "corral.host": (old.host, new.host),
        "dashboard.port": (old.dashboard_port, new.dashboard_port),
        "registry.port": (old.registry_url, new.registry_url),
        "router.port": (old.router_url, new.router_url),
    }
    for name, (a, b) in fixed.items():
        if a != b:
            raise ConfigError(
                f"changed from {a} to {b}: a running launcher cannot move it (corral down, then corral up)",
                file=new.config_file,
                field=name,
            )


def load_new_plan(old: Plan) -> Plan:
    """The config file read and resolved again (ConfigError when it is bad)."""
    from corral.config import load_plan

    new = load_plan(old.config_file)
    check_fixed(old, new)
    return new


@dataclass
class ReloadReport:
    """The diff and what applying it took."""

    diff: PlanDiff
    applied: bool
    steps: list[ReplicaStep] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "applied": self.applied,
            "diff": self.diff.as_dict(),
            "replaced": [s.as_dict() for s in self.steps],
            "errors": self.errors,
        }


class Reloader:
    """Applies a new plan to a running orchestrator, one change at a time (Rolling's lock)."""

    def __init__(self, orch: Orchestrator, rolling: Rolling) -> None:
        self.orch = orch
        self.rolling = rolling
        self.errors: list[str] = []  # what went wrong while applying (the rest still applied)

    async def reload(self, *, dry_run: bool = False) -> ReloadReport:
        """Read the config again and apply the difference (``dry_run``: only say what it is)."""
        new = await asyncio.to_thread(load_new_plan, self.orch.plan)
        diff = diff_plans(self.orch.plan, new)
        if dry_run or diff.empty:
            if not dry_run:
                self.orch.set_plan(self._keep_running(new, diff))
            return ReloadReport(diff, applied=False)
        self.errors = []
        async with self.rolling._lock:
            steps = await self._apply(new, diff)
        return ReloadReport(diff, applied=True, steps=steps, errors=list(self.errors))

    def _keep_running(self, new: Plan, diff: PlanDiff) -> Plan:
        """``new`` with old versions of changed processes and removed ones still listed."""
        old = self.orch.plan
        mine = [old.get(p.name) if p.name in diff.changed else p for p in new.processes]
        gone = [p for p in old.processes if p.name in diff.removed]
        return new.model_copy(update={"processes": [p for p in mine if p is not None] + gone})

    async def _apply(self, new: Plan, diff: PlanDiff) -> list[ReplicaStep]:
        orch = self.orch
        log.info("reload: %s", diff.as_dict())
        orch.set_plan(self._keep_running(new, diff))
        # New first: more capacity before any replica drains (replicas 3 -> 5).
        from corral.launcher.server import write_process_files

        for name in diff.added:
            p = new.get(name)
            assert p is not None
            write_process_files(p)
            orch.add(p)
        started = [p for n in diff.added if (p := new.get(n)) is not None and p.auto_start]
        for p in started:
            orch.start(p.name)
        results = await asyncio.gather(*(self.rolling._healthy(p) for p in started), return_exceptions=True)
        for p, res in zip(started, results, strict=True):
            if isinstance(res, BaseException):
                self.errors.append(f"{p.name}: {res}")
        steps: list[ReplicaStep] = []
        by_entry: dict[str, list[str]] = {}
        for name in diff.changed:
            p = new.get(name)
            assert p is not None
            by_entry.setdefault(p.entry, []).append(name)
        for names in by_entry.values():
            replacements = {n: p for n in names if (p := new.get(n)) is not None}
            steps += await self.rolling.roll(names, force=True, new=replacements)
        if diff.removed:
            await asyncio.gather(*(self._drain(n) for n in diff.removed))
            await orch.stop(diff.removed)
            for name in diff.removed:
                orch.forget(name)
        orch.set_plan(new)
        return steps

    async def _drain(self, name: str) -> None:
        p = self.orch.plan.get(name)
        if p is not None and self.orch.sups[name].pid is not None:
            self.orch.busy[name] = "draining (removed)"
            try:
                await self.rolling.drainer.drain(p, p.drain_timeout_s)
            finally:
                self.orch.busy.pop(name, None)
