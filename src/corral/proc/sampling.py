"""Status views of a supervised process: its state plus cpu %, resident memory and descendants."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import psutil

from corral.proc.events import State
from corral.proc.messages import Child

if TYPE_CHECKING:
    from corral.proc.supervisor import Supervisor


def sample(ps: psutil.Process | None) -> tuple[float | None, int | None, int | None]:
    """(cpu_percent, rss_bytes, children); None for what could not be read.

    ``cpu_percent`` is measured since the previous call on the same Process object, so the
    caller keeps one per process (the Supervisor keeps it on its Child).
    """
    cpu = rss = children = None
    if ps is not None:
        with contextlib.suppress(psutil.Error):
            with ps.oneshot():
                cpu = ps.cpu_percent(None)
                rss = ps.memory_info().rss
            children = len(ps.children(recursive=True))
    return cpu, rss, children


def status(sup: Supervisor, child: Child | None) -> dict[str, Any]:
    """``Supervisor.info()``: pid, state, restarts, uptime, cpu, memory, children, last output."""
    cpu, rss, children = sample(child.ps if child else None)
    return {
        "name": sup.spec.name,
        "pid": sup.pid,
        "state": str(sup.state),
        "restarts": sup.restarts,
        "uptime_s": round(time.time() - sup.started_at, 3) if sup.started_at and child else None,
        "started_at": sup.started_at,
        "last_exit": sup.last_exit,
        "reason": sup.reason,
        "cpu_percent": cpu,
        "rss_bytes": rss,
        "children": children,
        "adopted": bool(child and child.proc is None),
        "last_lines": sup.last_lines if sup.state == State.FAILED else [],
    }
