"""Supervisor with real processes: restarts, backoff, crash loops, policies, tree stop, spawn errors."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
from proc_helpers import PROCS, PY, Make, supervisors

from corral.proc import Probe, ProcessSpec, RestartPolicy, State, StateEvent, Supervisor, kill_tree
from support import wait_until


@pytest.fixture
async def sups() -> AsyncIterator[Make]:
    """Build Supervisors; every one is stopped (whole tree) at teardown."""
    async with supervisors() as make:
        yield make


async def _collect(sup: Supervisor, until: Callable[[StateEvent], bool], timeout: float) -> list[StateEvent]:
    events: list[StateEvent] = []
    sub = sup.subscribe()
    async with asyncio.timeout(timeout):
        async for ev in sub:
            events.append(ev)
            if until(ev):
                return events
    return events


def _fast(**kw: object) -> RestartPolicy:
    return RestartPolicy(**{"backoff_initial_s": 0.05, "stable_after_s": 60, **kw})  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_crash_is_detected_at_once_and_restart_begins_within_delay(sups: Make) -> None:
    sup = sups(
        name="stamp",
        argv=[PY, str(PROCS / "stamp_exit.py"), "0.3"],
        restart=RestartPolicy(backoff_initial_s=0.2, stable_after_s=60),
    )
    sub = sup.subscribe()
    await sup.start()
    first_pid = sup.pid
    events: list[StateEvent] = []
    async with asyncio.timeout(20):
        async for ev in sub:
            events.append(ev)
            if ev.state == State.STARTING and ev.pid != first_pid:
                break
    restarting = next(e for e in events if e.state == State.RESTARTING)
    restarted = events[-1]
    exit_at = float(next(ln for ln in sup.tail() if ln.startswith("EXIT_AT")).split()[1])
    detect = restarting.at - exit_at
    begin = restarted.at - restarting.at
    print(f"exit->detected {detect * 1000:.0f} ms, detected->respawned {begin * 1000:.0f} ms (delay 200 ms)")
    assert restarting.exit_code == 1 and "exit code 1" in (restarting.reason or "")
    # event driven: no polling interval in the way (bounds leave room for a loaded 2-core box)
    assert detect < 1.0
    assert 0.19 <= begin < 0.2 + 0.8
    assert sup.restarts == 1


async def test_backoff_grows_then_resets_after_a_stable_run(sups: Make, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    sup = sups(
        name="flappy",
        # runs 0-2 die at once, run 3 stays up 1.5 s (stable), run 4 dies at once, run 5 stays up
        argv=[PY, str(PROCS / "flappy.py"), str(counter), "0,0,0,1.5,0"],
        restart=RestartPolicy(backoff_initial_s=0.1, backoff_factor=2, backoff_max_s=0.3, stable_after_s=1.0),
    )
    collecting = asyncio.create_task(
        _collect(sup, lambda e: e.state == State.RESTARTING and e.restarts == 5, timeout=30)
    )
    await asyncio.sleep(0)  # the collector subscribes before the first event
    await sup.start()
    events = await collecting
    delays = [e.reason.rsplit("in ", 1)[1] for e in events if e.state == State.RESTARTING and e.reason]
    # grows 0.1 -> 0.2 -> capped 0.3; run 3 lived past stable_after_s, so back to 0.1
    assert delays == ["0.1s", "0.2s", "0.3s", "0.1s", "0.2s"]
    await sup.wait_for(State.HEALTHY, timeout=10)
    assert sup.restarts == 5


async def test_crash_loop_fails_with_reason_and_last_lines(sups: Make) -> None:
    sup = sups(
        name="loop",
        argv=[PY, str(PROCS / "crasher.py"), "3"],
        restart=_fast(max_restarts=2, window_s=60),
    )
    await sup.start()
    assert await sup.wait_for(State.FAILED, timeout=20) == State.FAILED
    assert sup.restarts == 2
    assert sup.reason is not None
    assert sup.reason.startswith("crash loop: 2 restarts within 60s")
    assert "exit code 3" in sup.reason and "boom: the last words" in sup.reason
    assert sup.last_lines[-1] == "boom: the last words"
    info = sup.info()
    assert info["state"] == "failed" and info["last_exit"] == 3 and info["last_lines"] == sup.last_lines
    # failed stays failed: no restart storm
    await asyncio.sleep(0.3)
    assert sup.state == State.FAILED and sup.restarts == 2


async def test_never_policy_fails_on_crash_and_stops_on_clean_exit(sups: Make) -> None:
    crash = sups(name="c", argv=[PY, str(PROCS / "crasher.py"), "4"], restart=RestartPolicy(policy="never"))
    clean = sups(name="z", argv=[PY, str(PROCS / "crasher.py"), "0"], restart=RestartPolicy(policy="never"))
    await crash.start()
    await clean.start()
    assert await crash.wait_for(State.FAILED, timeout=15) == State.FAILED
    assert crash.reason is not None and "exit code 4 (restart policy: never)" in crash.reason
    assert await clean.wait_for(State.STOPPED, timeout=15) == State.STOPPED
    assert crash.restarts == clean.restarts == 0 and clean.last_exit == 0


async def test_on_failure_stops_on_exit_0_and_restarts_on_error(sups: Make) -> None:
    ok = sups(name="ok", argv=[PY, str(PROCS / "crasher.py"), "0"], restart=_fast(policy="on-failure"))
    bad = sups(name="bad", argv=[PY, str(PROCS / "crasher.py"), "2"], restart=_fast(policy="on-failure"))
    await ok.start()
    await bad.start()
    assert await ok.wait_for(State.STOPPED, timeout=15) == State.STOPPED
    assert ok.restarts == 0 and ok.reason == "exited with exit code 0"
    await bad.wait_for(State.RESTARTING, timeout=15)
    wait_until(lambda: bad.restarts >= 1, timeout=5)


async def test_always_restarts_a_clean_exit(sups: Make) -> None:
    sup = sups(name="a", argv=[PY, str(PROCS / "crasher.py"), "0"], restart=_fast())
    await sup.start()
    await sup.wait_for(State.RESTARTING, timeout=15)
    assert sup.last_exit == 0


async def test_stop_kills_whole_tree_including_setsid_grandchild_ignoring_sigterm(
    sups: Make, tmp_path: Path
) -> None:
    pids_file = tmp_path / "pids"
    sup = sups(name="tree", argv=[PY, str(PROCS / "tree.py"), str(pids_file)], stop_grace_s=0.5)
    await sup.start()
    wait_until(pids_file.exists, timeout=15, what="tree pids")
    pids = [int(x) for x in pids_file.read_text().split()]
    assert len(pids) == 3 and pids[0] == sup.pid and all(_alive(p) for p in pids)
    grandchild = psutil.Process(pids[2])
    assert os.getsid(pids[2]) != os.getsid(pids[0])  # it really escaped the session
    info = sup.info()
    assert info["children"] == 2 and info["rss_bytes"] > 0 and info["cpu_percent"] is not None
    began = time.monotonic()
    await sup.stop()
    took = time.monotonic() - began
    assert sup.state == State.STOPPED and sup.pid is None
    assert not any(_alive(p) for p in pids), "a process of the tree survived"
    assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
    assert 0.45 < took < 5  # waited the grace (SIGTERM ignored), then SIGKILL


def test_kill_tree_blocking_variant(tmp_path: Path) -> None:
    import subprocess

    pids_file = tmp_path / "pids"
    p = subprocess.Popen([PY, str(PROCS / "tree.py"), str(pids_file)], start_new_session=True)
    try:
        wait_until(pids_file.exists, timeout=15, what="tree pids")
        pids = [int(x) for x in pids_file.read_text().split()]
        kill_tree(p.pid, grace_s=0.2)
        p.wait(timeout=5)
        wait_until(lambda: not any(_alive(x) for x in pids), timeout=5, what="tree gone")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


async def test_command_not_found_fails_at_once(sups: Make) -> None:
    sup = sups(name="nf", argv=["corral-no-such-command-xyz", "--flag"])
    events = sup.subscribe()
    await sup.start()
    assert sup.state == State.FAILED and sup.restarts == 0 and sup.pid is None
    assert sup.reason is not None and sup.reason.startswith("command not found: 'corral-no-such-command-xyz'")
    assert (await anext(events)).state == State.FAILED  # never STARTING


async def test_permission_denied_fails_at_once(sups: Make, tmp_path: Path) -> None:
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    sup = sups(name="pd", argv=[str(script)])
    await sup.start()
    assert sup.state == State.FAILED and sup.restarts == 0
    assert sup.reason is not None and sup.reason.startswith("permission denied")


async def test_missing_cwd_fails_at_once(sups: Make, tmp_path: Path) -> None:
    sup = sups(name="cwd", argv=[PY, "-c", "pass"], cwd=str(tmp_path / "nope"))
    await sup.start()
    assert sup.state == State.FAILED and "working directory not found" in (sup.reason or "")


async def test_port_taken_fails_at_once_naming_the_holder(sups: Make, port: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        sup = sups(name="pt", argv=[PY, str(PROCS / "http_app.py"), str(port)], ports=[port])
        await sup.start()
    assert sup.state == State.FAILED and sup.restarts == 0
    assert sup.reason is not None
    assert f"port {port} is already in use by pid {os.getpid()}" in sup.reason
    assert "python" in sup.reason  # the holder's command line


async def test_concurrent_commands_are_serialised(sups: Make) -> None:
    sup = sups(name="cc", argv=[PY, "-c", "import time; time.sleep(60)"])
    await asyncio.gather(sup.start(), sup.start(), sup.start())
    pid = sup.pid
    assert pid is not None and sup.state == State.HEALTHY
    assert len([p for p in psutil.Process().children() if p.pid == pid]) == 1
    await asyncio.gather(sup.restart(), sup.stop(grace_s=1), sup.start())
    assert sup.state == State.HEALTHY and sup.pid not in (None, pid)
    await asyncio.gather(sup.stop(grace_s=1), sup.stop(grace_s=1))
    assert sup.state == State.STOPPED and not _alive(pid)


async def test_output_reaches_log_file_tail_and_callback(tmp_path: Path) -> None:
    seen: list[str] = []
    log = tmp_path / "logs" / "chatty.log"
    # 20k lines at full speed: the child must never block on us
    code = "import sys\nfor i in range(20000): print('line', i)\nprint('err', file=sys.stderr)"
    sup = Supervisor(
        ProcessSpec(
            name="chatty", argv=[PY, "-c", code], log_file=log, restart=RestartPolicy(policy="never")
        ),
        on_line=seen.append,
    )
    await sup.start()
    assert await sup.wait_for(State.STOPPED, timeout=15) == State.STOPPED
    tail = [ln for ln in sup.tail(5) if not ln.startswith("[corral]")]
    assert tail[-2:] == ["line 19999", "err"]
    assert "line 0" in seen and "err" in seen
    text = log.read_text()
    assert "line 19999\n" in text and "[corral] started pid" in text


async def test_mock_backend_crash_to_restarted_to_ready_time(sups: Make, port: int) -> None:
    """SIGKILL a supervised `corral mock`: how fast is it restarted and ready again?"""
    sup = sups(
        name="mock",
        argv=[PY, "-m", "corral", "mock", "--port", str(port)],
        readiness=Probe(http=f"http://127.0.0.1:{port}/health"),
        ports=[port],
        restart=RestartPolicy(backoff_initial_s=0),
        stop_grace_s=3,
    )
    await sup.start()
    await sup.wait_for(State.HEALTHY, timeout=60)
    sub = sup.subscribe()
    killed_at = time.time()
    os.kill(sup.pid or 0, signal.SIGKILL)
    marks: dict[State, float] = {}
    async with asyncio.timeout(60):
        async for ev in sub:
            marks.setdefault(ev.state, ev.at)
            if ev.state == State.HEALTHY:
                break
    restarted = marks[State.STARTING] - killed_at
    ready = marks[State.HEALTHY] - killed_at
    print(f"mock crash -> restarted {restarted * 1000:.0f} ms, -> ready {ready * 1000:.0f} ms")
    assert marks[State.RESTARTING] - killed_at < 1.0
    assert restarted < 2.0 and ready < 30
