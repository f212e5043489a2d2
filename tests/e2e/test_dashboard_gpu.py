"""GPUs in the dashboard: a card's GPU line, the GPU panel's holders, a placement refusal.

The GPUs come from a ``CORRAL_GPU_INVENTORY`` file (docs/gpu.md), rewritten atomically while
`corral up` runs: the launcher reads it again on the next refresh.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dash_support import GIB, Launcher, backend_pid, gpu, start_launcher, write_inventory

from support import CorralProcs, free_port, wait_until

pytestmark = pytest.mark.browser


def config() -> str:
    # "gpu" gets GPU 0 (most free, ties by index); "big" would need 100 GiB on GPU 1 and is refused.
    return f"""
[registry]
enabled = false

[router]
enabled = false

[[backend]]
name = "gpu"
preset = "mock"
models = ["mock-gpu"]
port = {free_port()}
gpus_per_replica = 1

[[backend]]
name = "big"
preset = "mock"
models = ["mock-big"]
port = {free_port()}
gpus_per_replica = 1
gpu_memory_gb = 100
"""


@pytest.fixture(scope="module")
def gpu_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launcher, Path]]:
    tmp = tmp_path_factory.mktemp("dash-gpu")
    inventory = tmp / "gpus.json"
    write_inventory(inventory, [gpu(0), gpu(1)])
    procs = CorralProcs()
    launcher = None
    try:
        launcher = start_launcher(procs, tmp, config(), env={"CORRAL_GPU_INVENTORY": str(inventory)})
        wait_until(
            lambda: launcher.services()["gpu-0"]["state"] == "healthy",
            120,
            interval=0.2,
            what="gpu-0 healthy",
        )
        yield launcher, inventory
    finally:
        if launcher is not None:
            launcher.stop()
        procs.close()


def test_gpu_line_panel_holders_and_refusal(page: Any, gpu_fleet: tuple[Launcher, Path]) -> None:
    launcher, inventory = gpu_fleet
    services = launcher.services()
    assert services["gpu-0"]["gpus"] == [0]
    mock = backend_pid(services["gpu-0"]["sitter"]["pid"])
    assert services["gpu-0"]["pid"] == mock  # the card shows the backend's own PID
    me = os.getpid()  # a foreign holder: in no service's process tree
    write_inventory(inventory, [gpu(0, [(mock, 4 * GIB)]), gpu(1, [(me, 2 * GIB)])])
    wait_until(
        lambda: launcher.services()["gpu-0"]["gpu_memory_bytes"] == 4 * GIB, 30, what="4 GiB attributed"
    )

    page.goto(launcher.url + "/")
    line = page.locator('.card[data-service="gpu-0"] .gpus')
    page.wait_for_function(
        """() => document.querySelector('.card[data-service="gpu-0"] .gpus')?.textContent.includes("GiB")"""
    )
    text = line.inner_text()
    assert "GPU 0 · 4.0 GiB" in text and "CUDA_VISIBLE_DEVICES=0" in text, text

    panel = page.locator("#gpus")
    panel.wait_for(state="visible")
    assert panel.locator(".gpu").count() == 2
    own = panel.locator('.gpu[data-gpu="0"] .holder[data-service="gpu-0"]')
    own.wait_for()
    assert "4.0 GiB" in own.inner_text()
    assert own.locator("a").get_attribute("href") == "#svc-gpu-0"
    foreign = panel.locator(f'.gpu[data-gpu="1"] .holder.foreign[data-pid="{me}"]')
    foreign.wait_for()
    assert "foreign" in foreign.inner_text() and "2.0 GiB" in foreign.inner_text()
    assert "python" in foreign.locator(".cmd").inner_text().lower()
    assert "Test GPU 0" in panel.locator('.gpu[data-gpu="0"] .gpu-name').inner_text()
    # 4 GiB used of 80: the bar's service segment is 5% wide; GPU 1's is a foreign one.
    width = panel.locator('.gpu[data-gpu="0"] .membar .seg.svc').evaluate("e => e.style.width")
    assert float(width.rstrip("%")) == pytest.approx(5.0), width
    assert panel.locator('.gpu[data-gpu="1"] .membar .seg.foreign').count() == 1
    assert "76.0 GiB free" in panel.locator('.gpu[data-gpu="0"] .gpu-mem').inner_text()

    own.locator("a").click()  # the holder links to its card
    assert page.evaluate("() => location.hash") == "#svc-gpu-0"

    # The replica placement refused: failed, with the refusal as its reason.
    page.wait_for_selector('.card[data-service="big-0"][data-state="failed"]')
    reason = page.locator('.card[data-service="big-0"] .failure .reason')
    reason.wait_for(state="visible")
    assert "GiB needed" in reason.inner_text(), reason.inner_text()
