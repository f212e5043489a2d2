"""Helpers for the process-supervision integration tests (``corral.proc`` with real children)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from corral.proc import ProcessSpec, Supervisor

PROCS = Path(__file__).parent / "procs"
PY = sys.executable

Make = Callable[..., Supervisor]


@contextlib.asynccontextmanager
async def supervisors() -> AsyncIterator[Make]:
    """Build Supervisors from ``ProcessSpec`` fields; every one is stopped (whole tree) on exit."""
    made: list[Supervisor] = []

    def make(**spec: object) -> Supervisor:
        sup = Supervisor(ProcessSpec(**spec))  # type: ignore[arg-type]
        made.append(sup)
        return sup

    try:
        yield make
    finally:
        for sup in made:
            await sup.stop(grace_s=1)
