"""Adoption: a new supervisor re-attaches to the live process its predecessor left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.proc import Probe, ProcessSpec, RestartPolicy, State, Supervisor
from corral.proc.watch import adopt
from support import wait_until

PROCS = Path(__file__).parent / "procs"
PY = sys.executable


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """PIDs (process groups) to SIGKILL at teardown, whatever the test did."""
    owned: list[int] = []
    yield owned
    for pid in owned:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _spec(tmp_path: Path, port: int) -> ProcessSpec:
    return ProcessSpec(
        name="app",
        argv=[PY, str(PROCS / "http_app.py"), str(port)],
        log_file=tmp_path / "app.log",
        pid_file=tmp_path / "app.pid",
        readiness=Probe(http=f"http://127.0.0.1:{port}/health"),
        ports=[port],
        restart=RestartPolicy(backoff_initial_s=0.1),
        stop_grace_s=2,
    )


async def test_adopts_after_supervisor_is_sigkilled(tmp_path: Path, port: int, pids: list[int]) -> None:
    spec = _spec(tmp_path, port)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    runner = subprocess.Popen(  # noqa: ASYNC220 - the runner must be a plain, killable process
        [PY, str(PROCS / "run_supervisor.py"), str(spec_file)],
        stdout=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    pids.append(runner.pid)
    assert runner.stdout is not None
    line = runner.stdout.readline().decode()  # blocks until healthy (or the runner died)
    assert line.startswith("HEALTHY "), line
    backend = int(line.split()[1])
    pids.append(backend)
    runner.send_signal(signal.SIGKILL)  # the supervisor dies without cleaning up
    runner.wait(timeout=10)
    runner.stdout.close()
    assert psutil.pid_exists(backend)
    doc = json.loads(spec.pid_file.read_text())  # type: ignore[union-attr]
    assert doc["pid"] == backend and doc["create_time"] == psutil.Process(backend).create_time()

    sup = Supervisor(spec)
    sub = sup.subscribe()
    await sup.start()
    assert sup.pid == backend and sup.info()["adopted"]
    await sup.wait_for(State.HEALTHY, timeout=15)
    assert any(ln.startswith("listening on") for ln in sup.tail())  # old output read back
    assert sup.started_at == psutil.Process(backend).create_time()
    # the orphaned backend still writes to its log: no pipe to break
    assert "adopted running pid" in spec.log_file.read_text()  # type: ignore[union-attr]

    killed_at = time.time()
    os.kill(backend, signal.SIGKILL)
    async for ev in sub:
        if ev.state == State.RESTARTING:
            break
    assert ev.exit_code is None and ev.at - killed_at < 2.0  # pidfd: seen at once, not polled
    await sup.wait_for(State.HEALTHY, timeout=20)
    assert sup.pid not in (None, backend) and not sup.info()["adopted"]
    pids.append(sup.pid)  # type: ignore[arg-type]
    await sup.stop()
    assert not spec.pid_file.exists()  # type: ignore[union-attr]


async def test_detach_leaves_process_running_then_adopt_and_stop(tmp_path: Path, port: int) -> None:
    spec = _spec(tmp_path, port)
    first = Supervisor(spec)
    await first.start()
    await first.wait_for(State.HEALTHY, timeout=20)
    pid = first.pid
    assert pid is not None
    await first.detach()
    assert first.state == State.STOPPED and "left running" in (first.reason or "")
    assert psutil.pid_exists(pid) and spec.pid_file.exists()  # type: ignore[union-attr]

    second = Supervisor(spec)
    try:
        await second.start()
        assert second.pid == pid
        await second.wait_for(State.HEALTHY, timeout=15)
        assert second.info()["cpu_percent"] is not None
    finally:
        await second.stop(grace_s=2)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 10)


async def test_reused_pid_is_not_adopted(tmp_path: Path, port: int) -> None:
    spec = _spec(tmp_path, port)
    bystander = subprocess.Popen(  # noqa: ASYNC220
        [PY, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        real = psutil.Process(bystander.pid).create_time()
        from corral.proc.pidfile import argv_hash

        doc = {"pid": bystander.pid, "create_time": real - 100, "argv_hash": argv_hash(spec.argv)}
        spec.pid_file.write_text(json.dumps(doc))  # type: ignore[union-attr]
        sup = Supervisor(spec)
        try:
            await sup.start()
            assert sup.pid not in (None, bystander.pid) and not sup.info()["adopted"]
            # same pid and time but another command: not ours either
            other = spec.model_copy(update={"argv": [PY, "-c", "print('other')"], "ports": []})
            doc["create_time"] = real
            other.pid_file.write_text(json.dumps(doc))  # type: ignore[union-attr]
            assert adopt(other) is None
        finally:
            await sup.stop(grace_s=2)
        assert bystander.poll() is None  # the bystander was never touched
    finally:
        bystander.kill()
        bystander.wait()
