"""The inventory against the driver: NVML's own answers and nvidia-smi's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from corral.gpu import ENV_VAR, Inventory, read_inventory

pytestmark = pytest.mark.gpu

MIB = 1 << 20


def test_inventory_lists_every_gpu_nvml_counts(nvml: Inventory) -> None:
    import pynvml

    inv = read_inventory()
    assert inv.source == "nvml" and inv.message is None
    assert [g.index for g in inv.gpus] == list(range(pynvml.nvmlDeviceGetCount()))
    for g in inv.gpus:
        assert g.uuid.startswith(("GPU-", "MIG-")) and g.name
        assert (
            0 < g.memory_total
            and 0 <= g.memory_free <= g.memory_total
            and 0 <= g.memory_used <= g.memory_total
        )
        assert g.utilization_percent is None or 0 <= g.utilization_percent <= 100
        assert all(p.pid > 0 and p.used_memory >= 0 for p in g.processes)


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="nvidia-smi is not on PATH")
def test_inventory_agrees_with_nvidia_smi(nvml: Inventory) -> None:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines()]
    inv = read_inventory()
    assert len(rows) == len(inv.gpus)
    for (index, uuid, name, total_mib), g in zip(rows, inv.gpus, strict=True):
        assert (int(index), uuid, name) == (g.index, g.uuid, g.name)
        assert int(total_mib) == g.memory_total // MIB


def test_corral_gpus_json_reads_nvml(nvml: Inventory) -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    r = subprocess.run(
        [sys.executable, "-m", "corral", "gpus", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["source"] == "nvml"
    assert [g["uuid"] for g in doc["gpus"]] == [g.uuid for g in nvml.gpus]
