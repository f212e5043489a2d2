"""Probe watching: which probe loops run in each phase, and what a verdict means for the state.

While STARTING only the readiness probe runs, fast (``starting_period``), until it first passes;
once ready, readiness keeps running at its own period and liveness starts. ``judge`` is pure: it
updates the ready/live flags and says what the Supervisor should do.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from corral.proc import probes
from corral.proc.decide import starting_period
from corral.proc.events import State
from corral.proc.messages import Verdict
from corral.proc.spec import ProcessSpec

Report = probes.Verdict
Kind = Literal["startup", "readiness", "liveness"]
Outcome = Literal["ready", "healthy", "unhealthy", "kill", "none"]


@dataclass
class Health:
    """The last thresholded verdicts of the running process's readiness and liveness probes."""

    ready: bool = False
    live: bool = False


def startup_loop(spec: ProcessSpec, report: Report) -> Coroutine[Any, Any, None]:
    """The readiness loop while STARTING: fast, and done once it passes."""
    assert spec.readiness is not None
    return probes.run_loop(spec.readiness, report, period_s=starting_period(spec.readiness), until_first=True)


def running_loops(spec: ProcessSpec, report: Any) -> list[Coroutine[Any, Any, None]]:
    """The loops once ready; ``report(kind)`` gives the verdict callback for ``kind``."""
    loops = []
    if spec.readiness is not None:
        loops.append(
            probes.run_loop(
                spec.readiness,
                report("readiness"),
                initial=True,
                initial_delay_s=spec.readiness.period_s,
            )
        )
    if spec.liveness is not None:
        loops.append(probes.run_loop(spec.liveness, report("liveness"), initial=True))
    return loops


def judge(v: Verdict, state: State, health: Health, restart_policy: str) -> Outcome:
    """Apply verdict ``v`` to ``health``; what follows: become ready, (un)healthy, kill, nothing."""
    if v.kind == "startup":
        # failures while starting matter only through start_timeout_s
        return "ready" if v.ok and state == State.STARTING else "none"
    if v.kind == "liveness":
        health.live = v.ok
        if not v.ok:
            return "unhealthy" if restart_policy == "never" else "kill"
    else:
        health.ready = v.ok
    if health.ready and health.live:
        return "healthy"
    return "unhealthy" if not v.ok else "none"
