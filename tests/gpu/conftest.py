"""The real-GPU suite (``make test-gpu``): every test here is marked ``gpu`` and skipped without GPUs.

It reads NVML itself, so ``CORRAL_GPU_INVENTORY`` is cleared for every test.
"""

from __future__ import annotations

import pytest

from corral.gpu import ENV_VAR, Inventory
from corral.gpu.nvml import read_nvml


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.gpu)


@pytest.fixture(autouse=True)
def nvml(monkeypatch: pytest.MonkeyPatch) -> Inventory:
    """The NVML inventory; the test is skipped when NVML finds no GPU."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    inv = read_nvml()
    if not inv.gpus:
        pytest.skip(f"no NVIDIA GPU: {inv.message}")
    return inv
