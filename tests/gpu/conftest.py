"""The real-GPU suite (``make test-gpu``): every test here is marked ``gpu`` and skipped without GPUs.

It reads NVML itself, so ``CORRAL_GPU_INVENTORY`` is cleared for every test. The one exception:
the ``file`` variant of a test parametrised by ``source`` (``test_gpu_fleet.py``) is a rehearsal
of the same logic against an inventory file; it is not marked ``gpu`` and needs no GPU
(``pytest -q -m "not gpu" tests/gpu``).
"""

from __future__ import annotations

import pytest

from corral.gpu import ENV_VAR, Inventory
from corral.gpu.nvml import read_nvml


def _rehearsal(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("source") == "file"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not _rehearsal(item):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(autouse=True)
def nvml(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Inventory:
    """The NVML inventory; the test is skipped when NVML finds no GPU (rehearsals get an empty one)."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    if _rehearsal(request.node):
        return Inventory([], "none", "rehearsal: the GPU is played by an inventory file")
    inv = read_nvml()
    if not inv.gpus:
        pytest.skip(f"no NVIDIA GPU: {inv.message}")
    return inv
