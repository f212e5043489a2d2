"""Resource sampling for status views: cpu %, resident memory and descendants of the process."""

from __future__ import annotations

import contextlib

import psutil


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
