"""Two `corral mock --cuda-mem-gb X` on one real GPU: attribution, refusal, release after SIGKILL.

Needs PyTorch with CUDA in the environment (the mock allocates its memory with it).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from corral.gpu import (
    GIB,
    Attribution,
    Inventory,
    PlacementError,
    attribute,
    gpu_env,
    place,
    process_tree,
    read_inventory,
    wait_for_release,
)
from support import CorralProcs, free_port, wait_until

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]

X_GIB = 2.0  # what each mock holds
SLACK = int(1.5 * GIB)  # the CUDA context each process adds on top


@dataclass
class Mocks:
    gpu: int
    pids: dict[str, int]  # service name -> root PID (the mock serves in that very process)
    logs: Path


def _attribution(m: Mocks) -> Attribution:
    return attribute(read_inventory(), m.pids)


def _both_hold_memory(m: Mocks) -> Attribution | None:
    att = _attribution(m)
    return att if all(s.memory_bytes >= X_GIB * GIB for s in att.services.values()) else None


@pytest.fixture
def mocks(nvml: Inventory, tmp_path: Path) -> Iterator[Mocks]:
    pytest.importorskip("torch", reason="corral mock --cuda-mem-gb needs PyTorch")
    gpu = place(1, 1, nvml)[0][0]  # the GPU with the most free memory
    info = nvml.gpu(gpu)
    assert info is not None
    free = info.memory_free
    if free < 2 * (X_GIB * GIB + SLACK):
        pytest.skip(f"GPU {gpu} has only {free / GIB:.1f} GiB free")
    procs = CorralProcs()
    try:
        started = {}
        for name in ("mock-a", "mock-b"):
            port = free_port()
            p = procs.start(
                "mock", "--port", str(port), "--cuda-mem-gb", str(X_GIB), "--models", name,
                env=gpu_env([gpu]), log=tmp_path / f"{name}.log",
            )  # fmt: skip
            started[name] = (p, port)
        for name, (p, port) in started.items():
            _wait_healthy(p, port, tmp_path / f"{name}.log")
        pids = {name: p.pid for name, (p, _) in started.items()}
        m = Mocks(gpu, pids, tmp_path)
        _require_same_pid_namespace(m)
        yield m
    finally:
        procs.close()


def _wait_healthy(p: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Importing torch and creating a CUDA context take a while; a mock that exits fails at once."""

    def ready() -> str | None:
        if p.poll() is not None:
            return "exited"
        return "up" if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200 else None

    if wait_until(ready, timeout=180, what=f"corral mock on port {port}") == "exited":
        pytest.fail(f"corral mock exited with {p.returncode}:\n{log.read_text()[-2000:]}")


def _require_same_pid_namespace(m: Mocks) -> None:
    """NVML reports host PIDs: in a container without the host's PID namespace nothing can match."""
    try:
        wait_until(lambda: _both_hold_memory(m), timeout=60, what="both mocks on the GPU")
    except AssertionError:
        g = read_inventory().gpu(m.gpu)
        seen = [p.pid for p in g.processes] if g else []
        if not set(seen) & set(process_tree(m.pids.values())):
            pytest.skip(
                f"NVML lists PIDs {seen}, none of ours {sorted(m.pids.values())}: other PID namespace"
            )
        raise


def _free(inv: Inventory, index: int) -> int:
    g = inv.gpu(index)
    assert g is not None
    return g.memory_free


def test_each_mock_is_attributed_its_memory(mocks: Mocks) -> None:
    att = _attribution(mocks)
    for name in mocks.pids:
        s = att.services[name]
        assert s.gpus == [mocks.gpu], name
        assert X_GIB * GIB <= s.memory_bytes <= X_GIB * GIB + SLACK, (name, s.memory_bytes / GIB)
    usage = att.gpu(mocks.gpu)
    assert usage is not None
    holders = {h.service for h in usage.holders}
    assert {"mock-a", "mock-b"} <= holders


def test_placement_refuses_more_than_is_free_and_names_the_mocks(mocks: Mocks) -> None:
    inv = read_inventory()
    att = attribute(inv, mocks.pids)
    g = inv.gpu(mocks.gpu)
    assert g is not None
    need_gb = g.memory_free / GIB + 1
    with pytest.raises(PlacementError) as err:
        place(1, 1, inv, explicit=[[mocks.gpu]], gpu_memory_gb=need_gb, holders=att)
    msg = str(err.value)
    assert f"GPU {mocks.gpu} ({g.name}): " in msg and "needed; held by " in msg
    assert "service mock-a (" in msg and "service mock-b (" in msg
    most_free = max(x.memory_free for x in inv.gpus) / GIB
    with pytest.raises(PlacementError, match="only 0 have it"):
        place(1, 1, inv, gpu_memory_gb=most_free + 1, holders=att)


async def test_sigkill_releases_the_memory_and_spares_the_other_mock(mocks: Mocks) -> None:
    before = _free(read_inventory(), mocks.gpu)
    victim = mocks.pids["mock-a"]
    old_tree = process_tree([victim])
    # While it runs, waiting times out and names the holder.
    held = await wait_for_release(old_tree, [mocks.gpu], timeout_s=0.5, poll_s=0.1)
    assert not held.ok and held.reason is not None
    assert held.reason.startswith(f"GPU {mocks.gpu}: ") and f"PID {victim} (" in held.reason

    os.killpg(victim, signal.SIGKILL)
    result = await wait_for_release(old_tree, [mocks.gpu], timeout_s=60, kill_own=victim, poll_s=0.1)
    assert result.ok, result.reason
    after = read_inventory()
    assert _free(after, mocks.gpu) >= before + X_GIB * GIB - 0.25 * GIB
    g = after.gpu(mocks.gpu)
    assert g is not None and not {p.pid for p in g.processes} & old_tree
    assert attribute(after, mocks.pids).services["mock-b"].memory_bytes >= X_GIB * GIB
