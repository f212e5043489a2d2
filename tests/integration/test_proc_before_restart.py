"""Supervisor's ``before_restart`` hook: it gates every start after the first, and can veto it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import psutil
import pytest

from corral.proc import ProcessSpec, RestartPolicy, State, Supervisor
from corral.proc.decide import crash_loop, recent_restarts

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


class Gate:
    """A before_restart hook the test opens by hand; records the PIDs it was given."""

    def __init__(self, veto: str | None = None) -> None:
        self.calls: list[list[int]] = []
        self.open = asyncio.Event()
        self.veto = veto

    async def __call__(self, old_pids: list[int]) -> str | None:
        self.calls.append(old_pids)
        await self.open.wait()
        return self.veto


@pytest.fixture
async def made() -> AsyncIterator[list[Supervisor]]:
    sups: list[Supervisor] = []
    yield sups
    for sup in sups:
        await sup.stop(grace_s=1)


def _sup(made: list[Supervisor], gate: Gate) -> Supervisor:
    spec = ProcessSpec(name="gated", argv=SLEEPER, restart=RestartPolicy(backoff_initial_s=0), stop_grace_s=1)
    sup = Supervisor(spec, before_restart=gate)
    made.append(sup)
    return sup


async def _called(gate: Gate, n: int) -> None:
    async with asyncio.timeout(10):
        while len(gate.calls) < n:
            await asyncio.sleep(0.01)


async def test_crash_restart_waits_for_the_hook_with_the_old_pids(made: list[Supervisor]) -> None:
    gate = Gate()
    sup = _sup(made, gate)
    await sup.start()
    assert gate.calls == []  # the first start is not a restart
    old = sup.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    await _called(gate, 1)
    assert gate.calls[0][0] == old
    await asyncio.sleep(0.2)  # the gate is closed: nothing may start meanwhile
    assert sup.state == State.RESTARTING and sup.pid is None
    gate.open.set()
    await sup.wait_for(State.HEALTHY, timeout=10)
    assert sup.pid not in (None, old) and sup.restarts == 1


async def test_a_veto_fails_with_its_reason_and_stop_or_start_after_stop_are_gated(
    made: list[Supervisor],
) -> None:
    gate = Gate(veto="GPU 0: 1.0 GiB still held by PID 1")
    sup = _sup(made, gate)
    await sup.start()
    first = sup.pid
    assert first is not None
    await sup.stop()
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    await sup.start()  # after a stop: the old tree is checked first
    await _called(gate, 1)
    assert gate.calls[0][0] == first and sup.state == State.RESTARTING
    await sup.stop()  # cancels the pending gate: no start happens
    assert sup.state == State.STOPPED and sup.pid is None
    gate.open.set()
    await sup.start()
    await sup.wait_for(State.FAILED, timeout=10)
    assert sup.reason is not None and sup.reason.startswith("GPU 0: 1.0 GiB still held by PID 1")
    assert sup.pid is None and [c[0] for c in gate.calls] == [first, first]


def test_no_window_counts_every_restart_since_start_and_says_so() -> None:
    pol = RestartPolicy(max_restarts=2, window_s=None)
    assert recent_restarts(pol, [1.0, 2.0], now=1e9) == [1.0, 2.0]
    assert crash_loop(pol, [1.0], now=1e9) is None
    assert crash_loop(pol, [1.0, 2.0], now=1e9) == "crash loop: gave up after 2 restarts (max_restarts=2)"
