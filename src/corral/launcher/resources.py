"""Cheap resource figures for ``GET /api/services``: one sample of every process, kept ~1 s.

``Supervisor.info()`` asks psutil for each process's descendants, and psutil rescans the whole
process table for every such call: with 50 services one ``/api/services`` read ~8,000 ``/proc``
files (150-500 ms on a busy 2-core machine). Here one pass over the process table serves every
service, and the result is shared by every caller for ``ttl_s`` (each open dashboard refreshes
every 2 s), so the control API stays cheap however many pages are open.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psutil

from corral.proc.tree import children_map, process_tree

if TYPE_CHECKING:
    from corral.proc.supervisor import Supervisor

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One process's figures; None for what could not be read (it just exited, say)."""

    cpu_percent: float | None
    rss_bytes: int | None
    children: int | None
    adopted: bool = False


class ResourceSampler:
    """cpu %, RSS, descendant count of a set of PIDs, sampled at most once per ``ttl_s``.

    ``cpu_percent`` is measured between two samples on the same ``psutil.Process`` (kept here
    per PID, dropped when the PID exits or is reused), so it is the average since the last sample.
    Thread-safe: ``sample`` runs in a worker thread; concurrent callers share one pass.
    """

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._procs: dict[int, psutil.Process] = {}
        self._out: dict[int, Sample] = {}
        self._at = -float("inf")
        self.passes = 0  # process-table passes so far (tests and benchmarks read it)

    def cached(self, pids: Iterable[int]) -> dict[int, Sample] | None:
        """The last sample, if it is fresh and covers every PID in ``pids``; else None."""
        out = self._out
        if time.monotonic() - self._at >= self.ttl_s or any(p not in out for p in pids):
            return None
        return out

    def sample(self, pids: Iterable[int]) -> dict[int, Sample]:
        """Figures for ``pids`` (blocking: one pass over the process table, unless fresh)."""
        pids = list(pids)
        with self._lock:
            hit = self.cached(pids)
            if hit is not None:
                return hit
            kids = children_map()
            me = os.getpid()
            out: dict[int, Sample] = {}
            for pid in pids:
                out[pid] = self._one(pid, kids, me)
            for gone in set(self._procs) - set(pids):
                del self._procs[gone]
            self._out, self._at = out, time.monotonic()
            self.passes += 1
            return out

    def _one(self, pid: int, kids: dict[int, list[int]], me: int) -> Sample:
        ps = self._procs.get(pid)
        with contextlib.suppress(psutil.Error):
            if ps is None or not ps.is_running():  # is_running() also catches a reused PID
                ps = self._procs[pid] = psutil.Process(pid)
                ps.cpu_percent(None)  # prime: the first figure comes with the next sample
            with ps.oneshot():
                cpu = ps.cpu_percent(None)
                rss = ps.memory_info().rss
            # A process our launcher did not spawn (adopted after a restart) is not our child.
            return Sample(cpu, rss, len(process_tree([pid], kids)) - 1, ps.ppid() != me)
        self._procs.pop(pid, None)
        return Sample(None, None, None)


def status_of(sup: Supervisor, sample: Sample | None) -> dict[str, Any]:
    """``sup.info()``'s fields from the supervisor's public state and a shared ``sample``
    (``info()`` itself would rescan the process table)."""
    from corral.proc.events import State

    s = sample if sup.pid else None
    return {
        "name": sup.spec.name,
        "pid": sup.pid,
        "state": str(sup.state),
        "restarts": sup.restarts,
        "uptime_s": round(time.time() - sup.started_at, 3) if sup.started_at and sup.pid else None,
        "started_at": sup.started_at,
        "last_exit": sup.last_exit,
        "reason": sup.reason,
        "cpu_percent": s.cpu_percent if s else None,
        "rss_bytes": s.rss_bytes if s else None,
        "children": s.children if s else None,
        "adopted": bool(s and s.adopted),
        "last_lines": sup.last_lines if sup.state == State.FAILED else [],
    }


class Memo(Generic[T]):
    """The last value of ``compute`` for ``ttl_s`` while its ``key`` is unchanged (GPU
    attribution: keyed by the inventory just read, so a changed inventory is seen at once, and by
    the services' PIDs), shared by concurrent callers."""

    def __init__(self, compute: Callable[[], T], ttl_s: float = 1.0) -> None:
        self._compute = compute
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._value: tuple[float, object, T] | None = None

    def get(self, key: object = None) -> T:
        """The value for ``key``, computed again when the last one is older than ``ttl_s`` or was
        computed for another key (blocking)."""
        with self._lock:
            v = self._value
            if v is None or v[1] != key or time.monotonic() - v[0] >= self.ttl_s:
                v = self._value = (time.monotonic(), key, self._compute())
            return v[2]
