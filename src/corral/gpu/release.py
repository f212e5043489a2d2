"""Restart safety: before a backend starts again, wait until its old processes let go of the GPUs.

CUDA memory is freed only when every process holding a context exits; an orphaned engine worker
(vLLM's ``VLLM::EngineCore`` after its parent died) keeps it, and the new backend then fails with an
out-of-memory error. :func:`wait_for_release` polls the inventory until no process of the old tree
holds memory on the GPUs, SIGKILLing survivors of the old process group (never anyone else's).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

from corral.gpu.attribution import command_of, process_tree
from corral.gpu.inventory import Inventory, gib, read_inventory

KillOwn = Callable[[int], object] | int | None


@dataclass(frozen=True)
class ReleaseResult:
    """``ok`` when the memory was released (or there is nothing to check); ``reason`` otherwise."""

    waited_s: float
    ok: bool
    reason: str | None = None
    killed: list[int] = field(default_factory=list)  # PIDs SIGKILLed while waiting


@dataclass
class _OldTree:
    """The old backend's processes, by PID *and* start time, so a reused PID is never mistaken."""

    alive: dict[int, float]  # pid -> create_time when the wait began
    gone: set[int]  # named PIDs already dead then: only a stale driver entry can still list them

    @classmethod
    def snapshot(cls, roots: list[int], pgid: int | None) -> _OldTree:
        pids = process_tree(roots)
        if pgid is not None:  # orphans reparented away from the tree are still in its group
            pids |= {p for p in psutil.pids() if _pgid(p) == pgid}
        alive: dict[int, float] = {}
        for pid in pids:
            created = _created(pid)
            if created is not None:
                alive[pid] = created
        return cls(alive, pids - alive.keys())

    def owns(self, pid: int) -> bool:
        created = _created(pid)
        if pid in self.alive:
            return created is None or created == self.alive[pid]
        return pid in self.gone and created is None


def _created(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _held(inv: Inventory, tree: _OldTree, gpus: set[int] | None) -> dict[int, list[tuple[int, int]]]:
    """GPU index -> [(pid, bytes)] still held by the old tree."""
    out: dict[int, list[tuple[int, int]]] = {}
    for g in inv.gpus:
        if gpus is not None and g.index not in gpus:
            continue
        mine = [(p.pid, p.used_memory) for p in g.processes if tree.owns(p.pid)]
        if mine:
            out[g.index] = mine
    return out


def _describe(held: dict[int, list[tuple[int, int]]]) -> str:
    parts = []
    for index, procs in sorted(held.items()):
        who = ", ".join(
            f"PID {pid} ({cmd})" if (cmd := command_of(pid)) else f"PID {pid}" for pid, _ in procs
        )
        parts.append(f"GPU {index}: {gib(sum(b for _, b in procs))} still held by {who}")
    return "; ".join(parts)


def _kill(pid: int, kill_own: KillOwn) -> bool:
    if callable(kill_own):
        kill_own(pid)
        return True
    if kill_own is None:
        return False
    if _pgid(pid) != kill_own:
        return False  # not in the old process group: someone else's, leave it
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def wait_for_release(
    pids_or_tree: int | Iterable[int],
    gpus: Iterable[int] | None = None,
    timeout_s: float = 60.0,
    kill_own: KillOwn = None,
    poll_s: float = 0.2,
    kill_after_s: float = 0.0,
    inventory: Callable[[], Inventory] = read_inventory,
) -> ReleaseResult:
    """Wait until no process of the old tree holds memory on ``gpus`` (all GPUs when None).

    ``pids_or_tree``: the old backend's root PID (its live descendants are added now) or the PIDs
    recorded before it was stopped. ``kill_own``: a process group ID (survivors in it are
    SIGKILLed; it also finds orphans that were reparented away from the tree) or a callable given
    each surviving PID. Survivors are killed once ``kill_after_s`` has passed.
    """
    roots = [pids_or_tree] if isinstance(pids_or_tree, int) else list(pids_or_tree)
    pgid = kill_own if isinstance(kill_own, int) and not isinstance(kill_own, bool) else None
    wanted = set(gpus) if gpus is not None else None
    start = time.monotonic()
    tree = await asyncio.to_thread(_OldTree.snapshot, roots, pgid)
    killed: list[int] = []
    first = True
    while True:
        inv = await asyncio.to_thread(inventory)
        waited = time.monotonic() - start
        if first and not inv.gpus:
            return ReleaseResult(waited, True, f"nothing to check: {inv.message or 'no GPUs'}")
        first = False
        held = await asyncio.to_thread(_held, inv, tree, wanted)
        if not held:
            return ReleaseResult(waited, True, None, killed)
        if waited >= timeout_s:
            reason = await asyncio.to_thread(_describe, held)
            return ReleaseResult(waited, False, reason, killed)
        if waited >= kill_after_s:
            for procs in held.values():
                for pid, _ in procs:
                    if pid not in killed and psutil.pid_exists(pid) and _kill(pid, kill_own):
                        killed.append(pid)
        await asyncio.sleep(poll_s)
