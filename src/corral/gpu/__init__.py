"""GPU view for corral: inventory (NVML or a JSON file), placement, attribution, restart safety.

Import from here; the submodules are an implementation detail. See docs/gpu.md.
"""

from corral.gpu.attribution import Attribution, GpuUsage, Holder, ServiceUsage, attribute, process_tree
from corral.gpu.inventory import (
    ENV_VAR,
    GIB,
    GpuInfo,
    GpuProcess,
    Inventory,
    gib,
    read_inventory,
    static_inventory,
)
from corral.gpu.placement import PlacementError, cuda_visible_devices, gpu_env, place
from corral.gpu.release import ReleaseResult, wait_for_release

__all__ = [
    "ENV_VAR",
    "GIB",
    "Attribution",
    "GpuInfo",
    "GpuProcess",
    "GpuUsage",
    "Holder",
    "Inventory",
    "PlacementError",
    "ReleaseResult",
    "ServiceUsage",
    "attribute",
    "cuda_visible_devices",
    "gib",
    "gpu_env",
    "place",
    "process_tree",
    "read_inventory",
    "static_inventory",
    "wait_for_release",
]
