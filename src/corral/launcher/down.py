"""``corral down``: stop everything, then make sure no process of any tree survived."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from corral.config import Plan
from corral.errors import CorralError
from corral.launcher.client import ControlClient
from corral.launcher.state import StateDir, read_info
from corral.proc import pidfile
from corral.proc.tree import kill_now, kill_tree, snapshot


def _trees(pids: list[int]) -> list[psutil.Process]:
    return [p for pid in pids for p in snapshot(pid)]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:  # is_running checks identity
                out.append(p)
        except psutil.Error:
            pass
    return out


def recorded_pids(state: StateDir) -> list[tuple[Path, int]]:
    """Every pid file under state_dir (launcher's and sitters') whose process still matches it."""
    out = []
    for path in sorted(state.root.rglob("*.pid")):
        doc = pidfile.read(path)
        if doc is None:
            continue
        proc = pidfile.adoptable(path, list(doc.get("argv") or []))
        if proc is not None:
            out.append((path, proc.pid))
    return out


def down(plan: Plan, timeout: float = 60.0) -> str:
    """Stop the launcher for ``plan`` and everything it runs; returns what was done."""
    state = StateDir(plan.state_dir)
    info = read_info(state)
    if info is None:
        return _down_without_launcher(state)
    client = ControlClient.for_plan(plan)
    services = client.get("/api/services")["services"]
    # A sitter's view shows its backend's PID; a parked one has none, but its sitter runs.
    pids = [pid for s in services for pid in (s.get("pid"), (s.get("sitter") or {}).get("pid")) if pid]
    running = sum(1 for s in services if s.get("pid") or (s.get("sitter") or {}).get("pid"))
    tracked = _trees(pids + [pid for _, pid in recorded_pids(state)])
    launcher = psutil.Process(info["pid"])
    client.post("/api/shutdown")
    try:
        launcher.wait(timeout)
    except psutil.TimeoutExpired:
        raise CorralError(f"the launcher (pid {launcher.pid}) did not stop within {timeout:g}s") from None
    survivors = _alive(tracked)
    for p in survivors:
        kill_now(p.pid)
    note = f"; killed {len(survivors)} leftover process(es)" if survivors else ""
    return f"stopped {running} process(es) and the launcher{note}"


def _down_without_launcher(state: StateDir) -> str:
    """No launcher: stop the processes its pid files name, each only if its identity still matches."""
    found = recorded_pids(state)
    if not found:
        return "nothing is running"
    for path, pid in found:
        procs = snapshot(pid)
        kill_tree(pid, grace_s=10)
        deadline = time.monotonic() + 5
        while _alive(procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in _alive(procs):
            kill_now(p.pid)
        pidfile.remove(path)
    return f"no launcher was running; stopped {len(found)} process(es) left by an earlier one"
