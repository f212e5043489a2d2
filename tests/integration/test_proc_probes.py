"""Probes with Kubernetes semantics, alone and driving a Supervisor's states."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from proc_helpers import PROCS, PY, Make, supervisors

from corral.proc import Probe, RestartPolicy, State, Supervisor
from corral.proc.probes import check


@pytest.fixture
async def sups() -> AsyncIterator[Make]:
    """Build Supervisors; every one is stopped (whole tree) at teardown."""
    async with supervisors() as make:
        yield make


@pytest.fixture
async def app(sups: Make, port: int, tmp_path: Path) -> tuple[Supervisor, int, Path]:
    """A supervised tiny HTTP app whose status code is whatever ``status`` file says."""
    status = tmp_path / "status"
    sup = sups(
        name="app",
        argv=[PY, str(PROCS / "http_app.py"), str(port), str(status)],
        restart=RestartPolicy(policy="never"),
    )
    await sup.start()
    await _until_check(Probe(tcp=f"127.0.0.1:{port}"), True)
    return sup, port, status


async def _until_check(probe: Probe, want: bool, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while (await check(probe))[0] is not want:
            await asyncio.sleep(0.05)


async def test_http_probe_expected_status(app: tuple[Supervisor, int, Path]) -> None:
    _, port, status = app
    url = f"http://127.0.0.1:{port}/health"
    assert await check(Probe(http=url)) == (True, f"GET {url} -> 200")
    status.write_text("204")
    assert (await check(Probe(http=url)))[0]  # any 2xx when 200 is expected
    status.write_text("503")
    ok, detail = await check(Probe(http=url))
    assert not ok and detail.endswith("-> 503")
    assert (await check(Probe(http=url, expect_status=503)))[0]


async def test_tcp_and_http_probe_fail_on_closed_port(port: int) -> None:
    ok, detail = await check(Probe(tcp=f"127.0.0.1:{port}"))
    assert not ok and "tcp 127.0.0.1" in detail
    assert not (await check(Probe(http=f"http://127.0.0.1:{port}/")))[0]


async def test_http_probe_times_out_on_silent_server() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()  # accepts (backlog) but never answers
        began = time.monotonic()
        ok, detail = await check(Probe(http=f"http://127.0.0.1:{srv.getsockname()[1]}/", timeout_s=0.3))
    assert not ok and "timed out after 0.3s" in detail
    assert time.monotonic() - began < 2


async def test_exec_probe_exit_status_and_timeout() -> None:
    assert (await check(Probe(exec=[PY, "-c", "pass"])))[0]
    ok, detail = await check(Probe(exec=[PY, "-c", "raise SystemExit(3)"]))
    assert not ok and detail.endswith("exit 3")
    began = time.monotonic()
    ok, detail = await check(Probe(exec=[PY, "-c", "import time; time.sleep(30)"], timeout_s=0.3))
    assert not ok and "timed out" in detail and time.monotonic() - began < 3
    assert not (await check(Probe(exec=["corral-no-such-probe"])))[0]


async def test_readiness_gates_starting_and_is_seen_fast(sups: Make, port: int) -> None:
    sup = sups(
        name="slow",
        argv=[PY, str(PROCS / "http_app.py"), str(port)],
        env={"READY_AFTER": "0.8"},
        readiness=Probe(http=f"http://127.0.0.1:{port}/health", period_s=10),
    )
    await sup.start()
    assert sup.state == State.STARTING
    await sup.wait_for(State.HEALTHY, timeout=20)
    listening_at = time.time()
    # the app printed "listening" right before serving; ready must follow within ~0.1 s poll
    lines = sup.tail()
    assert any(ln.startswith("listening on") for ln in lines)
    assert sup.started_at is not None and listening_at - sup.started_at >= 0.8


async def test_initial_delay_holds_readiness(sups: Make) -> None:
    sup = sups(
        name="delay",
        argv=[PY, "-c", "import time; time.sleep(60)"],
        readiness=Probe(exec=[PY, "-c", "pass"], initial_delay_s=0.7),
    )
    await sup.start()
    began = time.monotonic()
    await sup.wait_for(State.HEALTHY, timeout=20)
    assert time.monotonic() - began >= 0.6


async def test_success_threshold_needs_consecutive_successes(sups: Make, port: int) -> None:
    sup = sups(
        name="succ",
        argv=[PY, str(PROCS / "http_app.py"), str(port)],
        readiness=Probe(tcp=f"127.0.0.1:{port}", success_threshold=4, period_s=0.5),
    )
    await sup.start()
    await _until_check(Probe(tcp=f"127.0.0.1:{port}"), True)
    seen_up = time.monotonic()
    await sup.wait_for(State.HEALTHY, timeout=20)
    assert time.monotonic() - seen_up >= 0.25  # 4 polls 0.1 s apart after the first success


async def test_start_timeout_gives_up_per_policy(sups: Make, port: int) -> None:
    sup = sups(
        name="never-ready",
        argv=[PY, "-c", "import time; time.sleep(60)"],
        readiness=Probe(tcp=f"127.0.0.1:{port}"),
        start_timeout_s=0.5,
        restart=RestartPolicy(policy="never"),
    )
    await sup.start()
    pid = sup.pid
    await sup.wait_for(State.FAILED, timeout=15)
    assert "not ready within start_timeout_s=0.5s" in (sup.reason or "")
    assert pid is not None and sup.pid is None


async def test_liveness_failure_restarts_then_recovers(sups: Make, port: int, tmp_path: Path) -> None:
    status = tmp_path / "status"
    url = f"http://127.0.0.1:{port}/health"
    sup = sups(
        name="live",
        argv=[PY, str(PROCS / "http_app.py"), str(port), str(status)],
        readiness=Probe(http=url),
        liveness=Probe(http=url, period_s=0.1, failure_threshold=2),
        restart=RestartPolicy(backoff_initial_s=0.1),
        stop_grace_s=2,
    )
    sub = sup.subscribe()
    await sup.start()
    await sup.wait_for(State.HEALTHY, timeout=20)
    first = sup.pid
    status.write_text("500")
    states = []
    async with asyncio.timeout(20):
        async for ev in sub:
            states.append(ev.state)
            if ev.state == State.UNHEALTHY:
                assert "liveness probe failed: GET" in (ev.reason or "")
                status.write_text("200")
            if ev.state == State.HEALTHY and State.RESTARTING in states:
                break
    assert states[-4:] == [State.UNHEALTHY, State.RESTARTING, State.STARTING, State.HEALTHY]
    assert sup.pid != first and sup.restarts == 1


async def test_liveness_with_never_policy_recovers_in_place(sups: Make, port: int, tmp_path: Path) -> None:
    status = tmp_path / "status"
    url = f"http://127.0.0.1:{port}/health"
    sup = sups(
        name="live-never",
        argv=[PY, str(PROCS / "http_app.py"), str(port), str(status)],
        readiness=Probe(http=url),
        liveness=Probe(http=url, period_s=0.1, failure_threshold=1),
        restart=RestartPolicy(policy="never"),
    )
    await sup.start()
    await sup.wait_for(State.HEALTHY, timeout=20)
    pid = sup.pid
    status.write_text("503")
    await sup.wait_for(State.UNHEALTHY, timeout=10)
    status.write_text("200")
    await sup.wait_for(State.HEALTHY, timeout=10)
    assert sup.pid == pid and sup.restarts == 0


async def test_readiness_failure_after_ready_is_unhealthy_without_restart(
    sups: Make, port: int, tmp_path: Path
) -> None:
    status = tmp_path / "status"
    url = f"http://127.0.0.1:{port}/health"
    sup = sups(
        name="ready-flap",
        argv=[PY, str(PROCS / "http_app.py"), str(port), str(status)],
        readiness=Probe(http=url, period_s=0.1, failure_threshold=2),
    )
    await sup.start()
    await sup.wait_for(State.HEALTHY, timeout=20)
    pid = sup.pid
    status.write_text("503")
    await sup.wait_for(State.UNHEALTHY, timeout=10)
    assert "readiness probe failed" in (sup.reason or "")
    status.write_text("200")
    await sup.wait_for(State.HEALTHY, timeout=10)
    assert sup.pid == pid and sup.restarts == 0
