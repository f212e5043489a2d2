"""`corral up -d` with two GPU mocks sharing one GPU: attribution (status, /api/gpus, /metrics),
the restart after SIGKILL waiting for the GPU release, a memory refusal, and `corral down`.

Runs once per inventory source: ``nvml`` (marked ``gpu``: a real GPU, mocks allocating with
PyTorch) and ``file`` (a rehearsal without a GPU, not marked ``gpu``; see ``gpu_fleet.py``). The
tests share one fleet per source and run in file order: the last one takes it down.
The measured figures go to ``gpu-fleet-<source>.json`` in the pytest tmp dir (printed with ``-s``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from gpu_fleet import (
    CONTEXT,
    X_GIB,
    FakeDriver,
    Fleet,
    alive,
    free_ports,
    sitter,
    wait_healthy_backend,
)

from corral.gpu import GIB, Inventory, gib, place, read_inventory
from corral.gpu.nvml import read_nvml
from support import wait_until

pytestmark = pytest.mark.timeout(900)

REPLICAS = ("m-0", "m-1")
BASELINE_TOLERANCE = int(0.5 * GIB)  # other users of a shared GPU may move a little meanwhile


@dataclass
class Rig:
    source: str
    gpu: int  # the GPU with the most free memory: both replicas share it
    gpu_name: str
    baseline_used: int  # its memory_used before `corral up`
    fleet: Fleet
    ports: list[int]  # backend port of each replica (its sitter listens on port + 1)
    driver: FakeDriver | None
    results: Path
    figures: dict[str, Any] = field(default_factory=dict)

    def backend_pids(self) -> list[int]:
        return [int(sitter(p, "/health")["pid"]) for p in self.ports]

    def held(self) -> dict[int, int]:
        """PID -> bytes on the shared GPU, as the driver reports it now."""
        g = self.fleet.inventory().gpu(self.gpu)
        return {p.pid: p.used_memory for p in g.processes} if g else {}

    def record(self, **figures: Any) -> None:
        self.figures.update(figures)
        doc = {"source": self.source, "gpu": self.gpu, "gpu_name": self.gpu_name, **self.figures}
        self.results.write_text(json.dumps(doc, indent=2))
        print(f"\n[{self.source}] {json.dumps(figures)} -> {self.results}")


def _require_torch_cuda() -> None:
    """A subprocess, so the test process creates no CUDA context of its own."""
    code = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        why = "torch.cuda.is_available() is False" if r.returncode == 3 else r.stderr.strip()[-300:]
        pytest.skip(f"corral mock --cuda-mem-gb needs PyTorch with CUDA: {why}")


@pytest.fixture(scope="module", params=["nvml", "file"])
def source(request: pytest.FixtureRequest) -> str:
    """Who reports the GPU memory: the driver (NVML) or the fake driver's inventory file."""
    return str(request.param)


@pytest.fixture(scope="module")
def rig(source: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp(f"gpu-fleet-{source}")
    driver: FakeDriver | None = None
    inv_file: Path | None = None
    if source == "nvml":
        inv = read_nvml()
        if not inv.gpus:
            pytest.skip(f"no NVIDIA GPU: {inv.message}")
        _require_torch_cuda()
        args = f'["--cuda-mem-gb", "{X_GIB}"]'
    else:
        inv_file = tmp / "gpus.json"
        driver = FakeDriver(inv_file)
        inv = read_inventory(inv_file)
        args = "[]"  # the fake driver books the memory; nothing allocates
    try:
        gpu = place(1, 1, inv)[0][0]
        g = inv.gpu(gpu)
        assert g is not None
        if g.memory_free < 2 * (X_GIB * GIB + CONTEXT) + GIB:
            pytest.skip(f"GPU {gpu} has only {gib(g.memory_free)} free")
        fleet = Fleet(tmp, "a", source, inv_file)
        base = free_ports(4)
        fleet.write_config(
            '[[backend]]\nname = "m"\npreset = "mock"\nmodels = ["gpu-mock"]\n'
            f"port = {base}\nport_step = 2\nreplicas = 2\ngpus_per_replica = 1\nshare_gpus = true\n"
            f"gpu_memory_gb = {X_GIB}\ngpu_release_timeout_s = 60\nargs = {args}\n"
            # Restart at once: the GPU gate, not a delay, must be what keeps the new backend waiting.
            "restart_delay = 0.1\n",
            gpus=[gpu],
        )
        results = tmp / f"{tmp.name}.json"
        rig = Rig(source, gpu, g.name, g.memory_used, fleet, [base, base + 2], driver, results)
        try:
            r = fleet.up()
            assert r.returncode == 0, r.stdout + r.stderr + _log_tail(fleet)
            for p in rig.ports:
                wait_healthy_backend(p)
            _require_same_pid_namespace(rig)
            yield rig
        finally:
            fleet.close()
    finally:
        if driver is not None:
            driver.close()


def _log_tail(fleet: Fleet) -> str:
    logs = sorted(fleet.state.rglob("*.log"))
    return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)


def _require_same_pid_namespace(rig: Rig) -> None:
    """NVML reports host PIDs: in a container without the host's PID namespace nothing matches."""
    pids = rig.backend_pids()
    try:
        wait_until(
            lambda: all(rig.held().get(pid, 0) >= X_GIB * GIB for pid in pids),
            timeout=60,
            interval=0.1,
            what="both mocks holding their memory",
        )
    except AssertionError:
        seen = sorted(rig.held())
        if rig.source == "nvml" and not set(seen) & set(pids):
            pytest.skip(f"NVML lists PIDs {seen}, none of ours {pids}: another PID namespace")
        raise


def _metrics(text: str) -> dict[str, float]:
    rows = (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] not in ("", "#"))
    return {k: float(v) for k, v in rows}


def test_status_api_and_metrics_attribute_each_mock_to_its_replica(rig: Rig) -> None:
    pids = rig.backend_pids()
    held = rig.held()
    lo, hi = X_GIB * GIB, X_GIB * GIB + CONTEXT
    status = rig.fleet.status()
    for name, pid in zip(REPLICAS, pids, strict=True):
        s = status[name]
        assert s["state"] == "healthy" and s["gpus"] == [rig.gpu], s
        # The right service: the PID the driver lists is this replica's backend, in its sitter's tree.
        assert pid in {c.pid for c in psutil.Process(s["pid"]).children(recursive=True)}
        used = s["gpu_usage"][str(rig.gpu)]
        assert lo <= used <= hi and s["gpu_memory_bytes"] == used, (name, used / GIB)
        assert abs(used - held[pid]) <= 64 << 20, (name, used, held[pid])

    gpus = rig.fleet.api("/api/gpus").json()
    entry = next(g for g in gpus["gpus"] if g["index"] == rig.gpu)
    holders = {h["pid"]: h for h in entry["holders"]}
    for name, pid in zip(REPLICAS, pids, strict=True):
        assert holders[pid]["service"] == name and lo <= holders[pid]["used_memory"] <= hi
    assert gpus["placed"] == {name: [rig.gpu] for name in REPLICAS}

    metrics = _metrics(rig.fleet.api("/metrics").text)
    for name in REPLICAS:
        value = metrics[f'corral_gpu_memory_used_bytes{{gpu="{rig.gpu}",service="{name}"}}']
        assert lo <= value <= hi, (name, value / GIB)
    assert metrics[f'corral_gpu_memory_total_bytes{{gpu="{rig.gpu}"}}'] == entry["memory_total"]
    rig.record(held_per_replica_gib={n: round(held[p] / GIB, 3) for n, p in zip(REPLICAS, pids, strict=True)})


class GoneWatch:
    """Polls the driver from a thread: when did ``pid`` stop holding memory on the GPU?"""

    def __init__(self, rig: Rig, pid: int) -> None:
        self.rig, self.pid = rig, pid
        self.gone_at: float | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        deadline = time.monotonic() + 240
        while self.gone_at is None and time.monotonic() < deadline:
            if self.pid not in self.rig.held():
                self.gone_at = time.time()
            time.sleep(0.05)


def test_sigkill_restart_starts_only_after_the_memory_is_freed(rig: Rig) -> None:
    port = rig.ports[0]
    old = wait_healthy_backend(port)
    restarts = sitter(port, "/health")["restarts"]
    assert sitter(port, "/info")["gpus"] == [rig.gpu]
    watch = GoneWatch(rig, old)
    killed_at = time.time()
    os.kill(old, signal.SIGKILL)
    new = wait_healthy_backend(port, not_pid=old)
    healthy_at = time.time()
    watch.thread.join(timeout=30)

    health, info = sitter(port, "/health"), sitter(port, "/info")
    assert health["restarts"] == restarts + 1 and health["pid"] == new != old
    last = info["gpu_release"]["last"]
    assert last["ok"] is True, last
    wait_s = info["gpu_release_wait_s"]
    assert wait_s is not None and wait_s >= 0
    assert watch.gone_at is not None, f"PID {old} still listed on GPU {rig.gpu}"
    # The new backend started after the driver stopped listing the old one (0.05 s polls).
    assert info["started_at"] >= watch.gone_at - 0.25, (info["started_at"], watch.gone_at)
    assert info["started_at"] >= last["finished_at"] - 0.05
    if rig.driver is not None:  # the fake driver frees 0.5 s after the death: the sitter waited
        assert wait_s >= 0.2, wait_s
    # The new backend holds its memory again, and the other replica kept its own all along.
    wait_until(lambda: rig.held().get(new, 0) >= X_GIB * GIB, timeout=60, interval=0.1, what="new mock")
    assert rig.held()[rig.backend_pids()[1]] >= X_GIB * GIB
    rig.record(
        gpu_release_wait_s=wait_s,
        freed_after_kill_s=round(watch.gone_at - killed_at, 3),
        kill_to_healthy_s=round(healthy_at - killed_at, 3),
    )


def test_gpu_memory_above_free_is_refused_while_the_rest_starts(rig: Rig) -> None:
    holders = rig.backend_pids()
    g = rig.fleet.inventory().gpu(rig.gpu)
    assert g is not None
    need_gb = round(g.memory_free / GIB + 1, 1)
    b = Fleet(rig.fleet.tmp.parent, "b", rig.source, rig.fleet.inventory_file)
    small, big = free_ports(2), free_ports(2)
    b.write_config(
        f'[[backend]]\nname = "small"\npreset = "mock"\nmodels = ["small"]\nport = {small}\n'
        f'[[backend]]\nname = "big"\npreset = "mock"\nmodels = ["big"]\nport = {big}\n'
        f"gpus = [[{rig.gpu}]]\ngpu_memory_gb = {need_gb}\n"
    )
    try:
        r = b.up()
        assert r.returncode == 1 and "big-0" in r.stdout + r.stderr, r.stdout + r.stderr
        # `up -d` returns at the first failure; the rest of the fleet goes on starting.
        status = wait_until(
            lambda: (st := b.status())["small-0"]["state"] == "healthy" and st,
            timeout=240,
            interval=0.2,
            what="small-0 healthy beside the refused big-0",
        )
        assert sitter(small, "/health")["backend"] == "healthy"
        refused = status["big-0"]
        assert refused["state"] == "failed" and not refused["pid"], refused
        reason = refused["reason"]
        needed = re.escape(gib(need_gb * GIB))
        head = rf"GPU {rig.gpu} \({re.escape(g.name)}\): [\d.]+ GiB free, {needed} needed"
        assert re.search(head + "; held by ", reason), reason
        for pid in holders:  # another fleet's mocks: foreign PIDs to this one
            assert f"PID {pid} (" in reason, reason
        rig.record(refusal=reason)
    finally:
        b.close()


def test_down_returns_the_gpu_memory_to_its_baseline(rig: Rig) -> None:
    pids = rig.backend_pids()
    r = rig.fleet.corral("down", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    down_at = time.monotonic()

    def back() -> Inventory | None:
        inv = rig.fleet.inventory()
        g = inv.gpu(rig.gpu)
        ok = g is not None and not set(pids) & {p.pid for p in g.processes}
        return inv if ok and g.memory_used <= rig.baseline_used + BASELINE_TOLERANCE else None

    inv = wait_until(back, timeout=60, interval=0.1, what=f"GPU {rig.gpu} back to its baseline")
    assert not [p for p in pids if alive(p)], "a mock survived corral down"
    g = inv.gpu(rig.gpu)
    rig.record(
        baseline_used_gib=round(rig.baseline_used / GIB, 3),
        after_down_used_gib=round(g.memory_used / GIB, 3),
        down_to_baseline_s=round(time.monotonic() - down_at, 3),
    )
