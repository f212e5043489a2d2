"""`corral sit --gpus`: CUDA_VISIBLE_DEVICES for the backend, and no restart while the old backend's
processes still hold GPU memory (played with a ``CORRAL_GPU_INVENTORY`` file: no GPU needed).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from sitter_helpers import sitter_health, sitter_info, start_sitter, wait_backend_state

from support import CorralProcs, free_port, wait_until

pytestmark = pytest.mark.slow

GIB = 1 << 30
HELD = int(38.2 * GIB)
# A backend that starts in milliseconds: /health and /v1/models answer 200.
SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b'{"data": []}')
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def write_inventory(path: Path, holders: list[int]) -> None:
    """GPU 0 of 80 GiB with each PID in ``holders`` holding 38.2 GiB; written atomically."""
    gpu: dict[str, Any] = {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "memory_total": 80 * GIB,
        "processes": [{"pid": pid, "used_memory": HELD} for pid in holders],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"gpus": [gpu]}))
    os.replace(tmp, path)


def start_gpu_sitter(procs: CorralProcs, tmp_path: Path, port: int, timeout_s: float) -> Path:
    inventory = tmp_path / f"gpus-{port}.json"
    write_inventory(inventory, [])
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    start_sitter(
        procs, tmp_path, port, "--service-type", "command", "--command", f"{sys.executable} {script} {port}",
        "--gpus", "0", "--gpu-release-timeout", str(timeout_s), "--restart-delay", "0.05",
        env={"CORRAL_GPU_INVENTORY": str(inventory)},
    )  # fmt: skip
    return inventory


def test_restart_waits_until_the_killed_backend_no_longer_holds_its_gpu(
    procs: CorralProcs, tmp_path: Path
) -> None:
    port = free_port()
    inventory = start_gpu_sitter(procs, tmp_path, port, timeout_s=60)
    pid = wait_backend_state(port, "healthy")["pid"]
    info = sitter_info(port)
    assert info["gpus"] == [0] and info["cuda_visible_devices"] == "0"
    assert info["gpu_release_wait_s"] is None  # no restart yet
    env = psutil.Process(pid).environ()
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"

    write_inventory(inventory, [pid])  # the driver still lists the backend after it died
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: sitter_info(port)["gpu_release"]["waiting"], 15, what="GPU release wait")
    time.sleep(0.5)  # the memory is still held: the restart must not happen meanwhile (the point)
    held = sitter_health(port)
    assert held["backend"] == "restarting" and held["pid"] is None
    released_at = time.time()
    write_inventory(inventory, [])

    health = wait_backend_state(port, "healthy")
    info = sitter_info(port)
    assert health["pid"] != pid and health["restarts"] == 1
    assert info["started_at"] >= released_at  # the new backend started after the release
    last = info["gpu_release"]["last"]
    assert last["ok"] is True and last["finished_at"] >= released_at
    assert info["gpu_release_wait_s"] >= 0.5
    print(f"\nGPU release wait before the restart: {info['gpu_release_wait_s']:.3f} s")
    log_text = (tmp_path / f"sitter-{port}.log").read_text()
    assert "GPU release wait:" in log_text


def test_memory_still_held_at_the_timeout_fails_naming_gpu_gib_and_pid(
    procs: CorralProcs, tmp_path: Path
) -> None:
    port = free_port()
    inventory = start_gpu_sitter(procs, tmp_path, port, timeout_s=0.5)
    pid = wait_backend_state(port, "healthy")["pid"]
    write_inventory(inventory, [pid])
    os.kill(pid, signal.SIGKILL)
    health = wait_backend_state(port, "failed")
    assert f"GPU 0: 38.2 GiB still held by PID {pid}" in health["reason"]
    assert health["reason"].startswith("GPU memory not released within 0.5s")
    info = sitter_info(port)
    assert info["state"] == "failed" and info["gpu_release"]["last"]["ok"] is False
    assert info["gpu_release_wait_s"] >= 0.5
