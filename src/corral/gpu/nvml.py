"""The thin NVML layer: one function turning pynvml calls into an :class:`Inventory`.

Kept minimal on purpose so everything above it runs in CI against the inventory file instead.
pynvml comes from nvidia-ml-py, the optional ``gpu`` extra.
"""

from __future__ import annotations

import functools
from typing import Any

from corral.gpu.inventory import GpuInfo, GpuProcess, Inventory

NO_NVML = "no NVIDIA driver / NVML not available"


@functools.cache
def _init(nv: Any) -> None:
    # Once per process (a failure raises and is not cached, so it is retried): nvmlInit costs tens
    # of ms and is reference-counted.
    nv.nvmlInit()


def _text(value: Any) -> str:
    # Older nvidia-ml-py releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else str(value)


def _device(nv: Any, i: int) -> GpuInfo:
    h = nv.nvmlDeviceGetHandleByIndex(i)
    mem = nv.nvmlDeviceGetMemoryInfo(h)
    try:
        util: int | None = int(nv.nvmlDeviceGetUtilizationRates(h).gpu)
    except nv.NVMLError:  # not supported on some boards and MIG slices
        util = None
    try:
        running = nv.nvmlDeviceGetComputeRunningProcesses(h)
    except nv.NVMLError:
        running = []
    procs = [GpuProcess(int(p.pid), int(p.usedGpuMemory or 0)) for p in running]
    return GpuInfo(
        index=i,
        uuid=_text(nv.nvmlDeviceGetUUID(h)),
        name=_text(nv.nvmlDeviceGetName(h)),
        memory_total=int(mem.total),
        memory_used=int(mem.used),
        memory_free=int(mem.free),
        utilization_percent=util,
        processes=procs,
    )


def read_nvml() -> Inventory:
    """Every GPU NVML sees, or an empty inventory whose message says why there is none."""
    try:
        import pynvml as nv
    except ImportError:
        return Inventory([], "none", f"{NO_NVML}: nvidia-ml-py is not installed (pip install 'corral[gpu]')")
    try:
        _init(nv)
        gpus = [_device(nv, i) for i in range(nv.nvmlDeviceGetCount())]
    except (nv.NVMLError, OSError) as exc:
        return Inventory([], "none", f"{NO_NVML}: {exc}")
    if not gpus:
        return Inventory([], "nvml", "NVML found no GPUs")
    return Inventory(gpus, "nvml")
