"""The inventory: the JSON file (what CI uses) and the thin NVML layer (real and faked)."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from corral.gpu import ENV_VAR, GpuProcess, read_inventory
from corral.gpu import nvml as nvml_layer

GIB = 1 << 30


def write(path: Path, doc: Any) -> None:
    """Replace the file atomically, as docs/gpu.md tells writers to."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def test_file_fields_and_defaults(tmp_path: Path) -> None:
    f = tmp_path / "gpus.json"
    write(
        f,
        {
            "gpus": [
                {"index": 1, "memory_total": 80 * GIB},
                {
                    "index": 0,
                    "uuid": "GPU-abc",
                    "name": "NVIDIA H100",
                    "memory_total": 80 * GIB,
                    "utilization_percent": 35,
                    "processes": [{"pid": 11, "used_memory": 30 * GIB}, {"pid": 12, "used_memory": 2 * GIB}],
                },
            ]
        },
    )
    inv = read_inventory(f)
    assert inv.source == f"file:{f}" and inv.message is None
    assert [g.index for g in inv.gpus] == [0, 1]
    g0 = inv.gpus[0]
    assert (g0.uuid, g0.name, g0.utilization_percent) == ("GPU-abc", "NVIDIA H100", 35)
    assert g0.memory_used == 32 * GIB and g0.memory_free == 48 * GIB  # derived from the processes
    assert g0.processes == [GpuProcess(11, 30 * GIB), GpuProcess(12, 2 * GIB)]
    assert g0.label == "GPU 0 (NVIDIA H100)"
    assert inv.gpus[1].memory_free == 80 * GIB and inv.gpus[1].utilization_percent is None


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "gpus.json"
    write(f, {"gpus": [{"index": 0, "memory_total": GIB, "memory_used": 5, "memory_free": 7}]})
    monkeypatch.setenv(ENV_VAR, str(f))
    g = read_inventory().gpus[0]
    assert (g.memory_used, g.memory_free) == (5, 7)  # given values win over derived ones


def test_a_file_that_changes_is_read_again(tmp_path: Path) -> None:
    f = tmp_path / "gpus.json"
    write(
        f, {"gpus": [{"index": 0, "memory_total": 80 * GIB, "processes": [{"pid": 101, "used_memory": 1}]}]}
    )
    first = read_inventory(f)
    assert read_inventory(f) is first  # unchanged file: the parsed copy is reused
    # Same size, replaced at once: the new inode is noticed even within one mtime tick.
    write(
        f, {"gpus": [{"index": 0, "memory_total": 80 * GIB, "processes": [{"pid": 202, "used_memory": 1}]}]}
    )
    assert read_inventory(f).gpus[0].processes == [GpuProcess(202, 1)]
    # Rewritten in place with another size.
    f.write_text(json.dumps({"gpus": [{"index": 0, "memory_total": 80 * GIB}]}))
    assert read_inventory(f).gpus[0].processes == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"gpus": [{"index": 0}]}', "gpus.0.memory_total: Field required"),
        (
            '{"gpus": [{"index": 0, "memory_total": "lots"}]}',
            "gpus.0.memory_total: Input should be a valid integer",
        ),
        ('{"gpus": [', "Invalid JSON"),
        ('{"gpus": []}', "lists no GPUs"),
    ],
)
def test_a_bad_file_gives_a_message_not_a_traceback(tmp_path: Path, content: str, expected: str) -> None:
    f = tmp_path / "gpus.json"
    f.write_text(content)
    inv = read_inventory(f)
    assert inv.gpus == []
    assert (
        inv.message is not None
        and inv.message.startswith(f"GPU inventory file {f}")
        and expected in inv.message
    )


def test_a_missing_file_gives_a_message(tmp_path: Path) -> None:
    inv = read_inventory(tmp_path / "nope.json")
    assert (
        inv.gpus == []
        and inv.message == f"GPU inventory file {tmp_path / 'nope.json'}: No such file or directory"
    )


def test_without_a_driver_the_inventory_is_empty_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real NVML path on this machine: nvidia-ml-py absent, or installed with no driver."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    inv = read_inventory()
    if inv.gpus:
        pytest.skip("this machine has NVIDIA GPUs")
    assert inv.source == "none"
    assert inv.message is not None and inv.message.startswith("no NVIDIA driver / NVML not available: ")
    assert inv.to_dict() == {"source": "none", "message": inv.message, "gpus": []}


def test_nvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if nvidia-ml-py were absent
    inv = nvml_layer.read_nvml()
    assert inv.gpus == []
    assert inv.message == (
        "no NVIDIA driver / NVML not available: nvidia-ml-py is not installed (pip install 'corral[gpu]')"
    )


class _NVMLError(Exception):
    pass


def _fake_pynvml(init_error: str | None = None) -> types.ModuleType:
    """pynvml's calls as NVML answers them for two GPUs; GPU 1 cannot report utilisation."""
    nv = types.ModuleType("pynvml")
    mem = {0: (80 * GIB, 30 * GIB), 1: (40 * GIB, 0)}

    def init() -> None:
        if init_error:
            raise _NVMLError(init_error)

    def utilization(h: int) -> SimpleNamespace:
        if h == 1:
            raise _NVMLError("Not Supported")
        return SimpleNamespace(gpu=57, memory=10)

    nv.NVMLError = _NVMLError  # type: ignore[attr-defined]
    nv.nvmlInit = init  # type: ignore[attr-defined]
    nv.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    nv.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nv.nvmlDeviceGetUUID = lambda h: f"GPU-{h}".encode()  # type: ignore[attr-defined]  # old releases: bytes
    nv.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    nv.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(  # type: ignore[attr-defined]
        total=mem[h][0], used=mem[h][1], free=mem[h][0] - mem[h][1]
    )
    nv.nvmlDeviceGetUtilizationRates = utilization  # type: ignore[attr-defined]
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: (  # type: ignore[attr-defined]
        [SimpleNamespace(pid=4242, usedGpuMemory=30 * GIB), SimpleNamespace(pid=7, usedGpuMemory=None)]
        if h == 0
        else []
    )
    return nv


def test_nvml_layer_maps_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    inv = nvml_layer.read_nvml()
    assert inv.source == "nvml" and inv.message is None
    g0, g1 = inv.gpus
    assert (g0.index, g0.uuid, g0.name) == (0, "GPU-0", "NVIDIA H100 80GB HBM3")
    assert (g0.memory_total, g0.memory_used, g0.memory_free) == (80 * GIB, 30 * GIB, 50 * GIB)
    assert g0.utilization_percent == 57 and g1.utilization_percent is None
    assert g0.processes == [GpuProcess(4242, 30 * GIB), GpuProcess(7, 0)]  # None (no permission) -> 0


def test_nvml_init_failure_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_error="Driver Not Loaded"))
    inv = nvml_layer.read_nvml()
    assert inv.gpus == [] and inv.message == "no NVIDIA driver / NVML not available: Driver Not Loaded"
