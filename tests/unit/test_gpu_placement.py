"""Placement is pure: inventories built in memory, no NVML, no processes."""

from __future__ import annotations

import pytest

from corral.errors import CorralError
from corral.gpu import (
    Attribution,
    GpuInfo,
    GpuProcess,
    GpuUsage,
    Holder,
    Inventory,
    PlacementError,
    cuda_visible_devices,
    gpu_env,
    place,
    static_inventory,
)

GIB = 1 << 30


def gpu(index: int, free_gib: float, total_gib: float = 80, procs: list[GpuProcess] | None = None) -> GpuInfo:
    total = int(total_gib * GIB)
    free = int(free_gib * GIB)
    return GpuInfo(index, f"GPU-{index}", "NVIDIA H100", total, total - free, free, 0, procs or [])


def inv(*frees: float) -> Inventory:
    return Inventory([gpu(i, f) for i, f in enumerate(frees)], "test")


def test_takes_the_gpus_with_the_most_free_memory() -> None:
    four = inv(10, 70, 40, 80)
    assert place(2, 1, four) == [[3], [1]]
    assert place(1, 2, four) == [[1, 3]]
    assert place(2, 2, four) == [[1, 3], [0, 2]]


def test_equal_free_memory_falls_back_to_index_order() -> None:
    assert place(3, 1, inv(80, 80, 80)) == [[0], [1], [2]]


def test_never_shares_a_gpu_unless_asked() -> None:
    with pytest.raises(
        PlacementError, match=r"need 3 GPU\(s\) but only 2 exist \(GPUs 0, 1\); set share_gpus"
    ):
        place(3, 1, inv(80, 80))
    assert issubclass(PlacementError, CorralError)


def test_share_gpus_spreads_before_stacking() -> None:
    assert place(3, 1, inv(80, 50), share_gpus=True) == [[0], [1], [0]]


def test_share_gpus_counts_memory_already_promised() -> None:
    two = inv(80, 50)
    # 30 GiB each: GPU 0 takes two (80 -> 20), GPU 1 one (50 -> 20); a fourth fits nowhere.
    assert place(3, 1, two, share_gpus=True, gpu_memory_gb=30) == [[0], [1], [0]]
    with pytest.raises(PlacementError) as err:
        place(4, 1, two, share_gpus=True, gpu_memory_gb=30)
    msg = str(err.value)
    assert msg.startswith(
        "replica 3 needs 1 GPU(s) with 30.0 GiB free, only 0 have it once replicas 0-2 are placed"
    )
    assert "GPU 0 (NVIDIA H100): 20.0 GiB free, 30.0 GiB needed" in msg
    assert "GPU 1 (NVIDIA H100): 20.0 GiB free, 30.0 GiB needed" in msg


def test_memory_requirement_skips_gpus_that_are_too_full() -> None:
    assert place(1, 1, inv(90, 12, 45), gpu_memory_gb=40) == [[0]]
    assert place(2, 1, inv(12, 41, 45), gpu_memory_gb=40) == [[2], [1]]


def test_refusal_names_gpu_free_needed_and_holders() -> None:
    procs = [GpuProcess(4242, int(20 * GIB)), GpuProcess(5000, int(30.1 * GIB))]
    inventory = Inventory([gpu(0, 12, procs=procs)], "test")
    g = inventory.gpus[0]
    holders = Attribution(
        gpus=[
            GpuUsage(
                0, g.uuid, g.name, g.memory_total, g.memory_used, g.memory_free, 0,
                [Holder(4242, "python train.py", 20 * GIB), Holder(5000, "vllm", int(30.1 * GIB), "chat-0")],
            )
        ],
        services={},
        source="test",
    )  # fmt: skip
    with pytest.raises(PlacementError) as err:
        place(1, 1, inventory, gpu_memory_gb=40, holders=holders)
    assert str(err.value).splitlines()[1].strip() == (
        "GPU 0 (NVIDIA H100): 12.0 GiB free, 40.0 GiB needed; "
        "held by service chat-0 (30.1 GiB), PID 4242 python train.py (20.0 GiB)"
    )
    # Without an attribution the PIDs alone are named.
    with pytest.raises(PlacementError, match=r"held by PID 5000 \(30.1 GiB\), PID 4242 \(20.0 GiB\)"):
        place(1, 1, inventory, gpu_memory_gb=40)


def test_a_service_with_several_processes_is_named_once() -> None:
    u = GpuUsage(0, "", "X", 0, 0, 0, None, [Holder(1, "a", GIB, "chat"), Holder(2, "b", 2 * GIB, "chat")])
    assert u.describe_holders() == "service chat (3.0 GiB)"


def test_explicit_lists_win_over_free_memory() -> None:
    assert place(2, 1, inv(10, 80, 80), explicit=[[0], [2, 1]]) == [[0], [1, 2]]


def test_explicit_lists_are_checked() -> None:
    three = inv(80, 80, 80)
    with pytest.raises(PlacementError, match=r"2 list\(s\) for 3 replica\(s\)"):
        place(3, 1, three, explicit=[[0], [1]])
    with pytest.raises(PlacementError, match=r"replica 1: GPU 7 does not exist \(GPUs 0, 1, 2\)"):
        place(2, 1, three, explicit=[[0], [7]])
    with pytest.raises(PlacementError, match="replicas 0, 1 are all given GPU 2; set share_gpus"):
        place(2, 1, three, explicit=[[2], [2]])
    with pytest.raises(PlacementError, match=r"names a GPU twice"):
        place(1, 2, three, explicit=[[1, 1]])
    assert place(2, 1, three, explicit=[[2], [2]], share_gpus=True) == [[2], [2]]


def test_explicit_lists_still_need_the_memory() -> None:
    with pytest.raises(PlacementError, match=r"GPU 0 \(NVIDIA H100\): 50.0 GiB free, 60.0 GiB needed"):
        place(2, 1, inv(50, 80), explicit=[[0], [0]], share_gpus=True, gpu_memory_gb=30)


def test_explicit_lists_are_trusted_without_an_inventory() -> None:
    empty = Inventory([], "none", "no NVIDIA driver / NVML not available: x")
    assert place(1, 2, empty, explicit=[[3, 1]], gpu_memory_gb=40) == [[1, 3]]


def test_no_gpus_visible_says_why() -> None:
    empty = Inventory([], "none", "no NVIDIA driver / NVML not available: NVML Shared Library Not Found")
    with pytest.raises(PlacementError, match="2 GPU\\(s\\) needed but none is visible: no NVIDIA driver"):
        place(2, 1, empty)
    assert place(2, 0, empty) == [[], []]


def test_static_inventory_places_by_index_without_memory_checks() -> None:
    static = static_inventory([0, 1, 2, 3])
    assert place(2, 2, static, gpu_memory_gb=40) == [[0, 1], [2, 3]]


def test_bad_counts_are_refused() -> None:
    with pytest.raises(PlacementError, match="must be >= 0"):
        place(-1, 1, inv(80))
    with pytest.raises(PlacementError, match="a replica needs 3 GPUs but only 2 exist"):
        place(1, 3, inv(80, 80), share_gpus=True)


def test_cuda_visible_devices() -> None:
    assert cuda_visible_devices([0, 2]) == "0,2"
    assert cuda_visible_devices([]) == ""
    assert gpu_env([1]) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}
