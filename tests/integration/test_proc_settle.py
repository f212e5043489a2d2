"""``settle_s``: a process without a readiness probe is HEALTHY only once it stayed up that long;
an exit before that is a failed start that the restart policy judges like any crash."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from proc_helpers import PY, Make, supervisors

from corral.proc import RestartPolicy, State, StateEvent, Supervisor

SLEEPER = [PY, "-c", "import time; time.sleep(600)"]


def _dies(code: int, after_s: float = 0.1) -> list[str]:
    return [
        PY,
        "-c",
        f"import sys, time; print('bad flag --nope', flush=True); time.sleep({after_s}); sys.exit({code})",
    ]


@pytest.fixture
async def sups() -> AsyncIterator[Make]:
    async with supervisors() as make:
        yield make


async def _until(sup: Supervisor, sub: AsyncIterator[StateEvent], *states: State) -> list[StateEvent]:
    seen: list[StateEvent] = []
    async with asyncio.timeout(20):
        async for ev in sub:
            seen.append(ev)
            if ev.state in states:
                return seen
    return seen


async def test_probeless_process_is_starting_until_it_stayed_up_settle_s(sups: Make) -> None:
    sup = sups(name="settle", argv=SLEEPER, settle_s=0.5, stop_grace_s=1)
    sub = sup.subscribe()
    t0 = time.monotonic()
    await sup.start()
    assert sup.state == State.STARTING and sup.pid is not None
    events = await _until(sup, sub, State.HEALTHY, State.FAILED)
    assert [e.state for e in events] == [State.STARTING, State.HEALTHY]
    assert events[1].at - events[0].at >= 0.45
    assert time.monotonic() - t0 < 10  # the timer fires; nothing waits for a poll


async def test_settle_s_zero_keeps_healthy_at_spawn(sups: Make) -> None:
    sup = sups(name="at-once", argv=SLEEPER, stop_grace_s=1)  # ProcessSpec default: 0
    await sup.start()
    assert sup.state == State.HEALTHY


async def test_exit_before_settle_with_never_fails_at_once_with_the_output(sups: Make) -> None:
    sup = sups(name="early", argv=_dies(2), settle_s=5, restart=RestartPolicy(policy="never"))
    sub = sup.subscribe()
    await sup.start()
    events = await _until(sup, sub, State.FAILED, State.HEALTHY)
    assert [e.state for e in events] == [State.STARTING, State.FAILED]
    assert events[-1].exit_code == 2 and sup.restarts == 0
    reason = sup.reason or ""
    assert "exit code 2 before settle_s=5s (failed start)" in reason and "bad flag --nope" in reason


async def test_clean_exit_before_settle_counts_toward_the_restart_policy(sups: Make) -> None:
    policy = RestartPolicy(policy="on-failure", max_restarts=1, backoff_initial_s=0.05, stable_after_s=60)
    sup = sups(name="early0", argv=_dies(0), settle_s=5, restart=policy)
    sub = sup.subscribe()
    await sup.start()
    events = await _until(sup, sub, State.FAILED)
    states = [e.state for e in events]
    assert State.HEALTHY not in states and states.count(State.RESTARTING) == 1
    assert sup.restarts == 1 and "crash loop" in (sup.reason or "")
    assert "before settle_s=5s" in (sup.reason or "")
