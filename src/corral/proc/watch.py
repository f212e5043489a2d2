"""Getting and knowing the process: spawn it or adopt it from its PID file, wait for its exit,
record its tree.

Exit detection is event-driven: the child watcher for our own child, a pidfd for an adopted
one, never polling. Descendants are recorded every few seconds so that ones re-parented after a
crash of their leader can still be found and killed.
"""

from __future__ import annotations

import asyncio
import time

import psutil

from corral.proc import pidfile
from corral.proc.messages import Child
from corral.proc.spawn import describe_os_error, preflight, spawn
from corral.proc.spec import ProcessSpec
from corral.proc.tree import snapshot

TREE_SCAN_S = 5.0  # how often descendants are recorded, to kill re-parented ones after a crash


def spawned(proc: asyncio.subprocess.Process) -> Child:
    """The Child for a process we just spawned."""
    try:
        ps: psutil.Process | None = psutil.Process(proc.pid)
    except psutil.Error:
        ps = None
    return Child(proc.pid, proc, ps, time.monotonic(), time.time())


def adopt(spec: ProcessSpec) -> Child | None:
    """The live process named by ``spec.pid_file``, if it is still the one we started."""
    if spec.pid_file is None:
        return None
    ps = pidfile.adoptable(spec.pid_file, spec.argv)
    if ps is None:
        return None
    try:
        created = ps.create_time()
    except psutil.Error:
        return None
    ps.cpu_percent(None)  # prime it: info() reports % since the previous call
    mono = time.monotonic() - max(0.0, time.time() - created)
    return Child(ps.pid, None, ps, mono, created)


async def wait_exit(child: Child) -> int | None:
    """The exit code (-N: signal N); None for an adopted process, whose status we cannot read."""
    if child.proc is not None:
        return await child.proc.wait()
    assert child.ps is not None
    await pidfile.wait_exit(child.ps)
    return None


async def track_tree(child: Child) -> None:
    """Keep ``child.tree`` up to date with every descendant seen (runs until cancelled)."""
    await asyncio.sleep(1.0)
    while True:
        known = {pid: p for pid, p in child.tree.items() if p.is_running()}
        for p in snapshot(child.pid):
            known.setdefault(p.pid, p)
        child.tree = known
        await asyncio.sleep(TREE_SCAN_S)


def tree_pids(child: Child) -> list[int]:
    """The root's PID first, then every descendant recorded or seen now."""
    rest = {p.pid for p in snapshot(child.pid)} | set(child.tree)
    rest.discard(child.pid)
    return [child.pid, *sorted(rest)]


async def start_child(spec: ProcessSpec, out_fd: int) -> Child | str:
    """Spawn ``spec`` (writing its output to ``out_fd``) and record its PID file; or say why not."""
    pidfile.remove(spec.pid_file)
    why = await preflight(spec)
    if why is not None:
        return why
    try:
        proc = await spawn(spec, out_fd)
    except OSError as exc:
        return describe_os_error(spec, exc)
    if spec.pid_file is not None:
        pidfile.write(spec.pid_file, proc.pid, spec.argv, spec.name)
    return spawned(proc)
