"""Helpers for ``test_gpu_fleet.py``: a detached ``corral up`` fleet of GPU mocks, read back through
the CLI, the control API and the sitters, against one of two inventory sources.

``nvml``: the real driver; the mocks allocate with ``--cuda-mem-gb`` (PyTorch with CUDA).
``file``: a rehearsal on a machine without a GPU. :class:`FakeDriver` plays the driver by keeping
a ``CORRAL_GPU_INVENTORY`` file up to date: every live ``corral mock`` of this test with
``CUDA_VISIBLE_DEVICES`` set holds ``X GiB + context`` on that GPU, and a dead one's memory is
freed ``RELEASE_LAG_S`` after it died, as a driver tearing down a CUDA context does. The test logic
is the same for both; only who reports the memory differs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from corral.gpu import ENV_VAR, GIB, Inventory, read_inventory
from corral.gpu.nvml import read_nvml
from support import kill_tree, wait_until

TOKEN = "gpu-fleet-token"
X_GIB = 2.0  # what each mock holds
CONTEXT = int(1.5 * GIB)  # the most a CUDA context may add on top
FAKE_CONTEXT = int(0.3 * GIB)  # what the fake driver adds
RELEASE_LAG_S = 0.5  # the fake driver frees a dead process's memory this long after it died


def free_ports(n: int) -> int:
    """A base port P with P .. P+n-1 all free on 127.0.0.1 now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n >= 65000:
            continue
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


class FakeDriver:
    """Keeps ``path`` (a ``CORRAL_GPU_INVENTORY`` file) in step with the mocks this test runs."""

    totals = {0: 16 * GIB, 1: 24 * GIB}  # GPU 1 has the most free memory: placement must pick it

    def __init__(self, path: Path) -> None:
        self.path = path
        self.died: dict[int, float] = {}  # pid -> when it was first seen dead
        self.held: dict[int, tuple[int, int]] = {}  # pid -> (gpu, bytes)
        self.stop = threading.Event()
        self.write()
        self.thread = threading.Thread(target=self.run, name="fake-gpu-driver", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.tick()

    def tick(self) -> None:
        now = time.monotonic()
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            pid = p.info["pid"]
            cmd = p.info["cmdline"] or []
            # `python -m corral mock ...` only: the sitter's argv names the mock preset too.
            if pid in self.held or "corral" not in cmd or cmd[cmd.index("corral") + 1 :][:1] != ["mock"]:
                continue
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                env = p.environ()
            except (psutil.Error, OSError):
                continue
            if env.get(ENV_VAR) == str(self.path) and env.get("CUDA_VISIBLE_DEVICES", "").isdigit():
                self.held[pid] = (int(env["CUDA_VISIBLE_DEVICES"]), int(X_GIB * GIB) + FAKE_CONTEXT)
        for pid in list(self.held):
            if not alive(pid):
                self.died.setdefault(pid, now)
                if now - self.died[pid] >= RELEASE_LAG_S:
                    del self.held[pid]
        self.write()

    def write(self) -> None:
        gpus = []
        for index, total in self.totals.items():
            held = sorted(self.held.items())
            procs = [{"pid": pid, "used_memory": n} for pid, (g, n) in held if g == index]
            gpus.append({"index": index, "name": "Fake GPU", "memory_total": total, "processes": procs})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"gpus": gpus}))
        os.replace(tmp, self.path)  # atomically, as docs/gpu.md asks


def alive(pid: int) -> bool:
    """Running (a zombie holds no GPU memory and is not running)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Fleet:
    """One ``corral up -d`` fleet in its own state dir, on its own free ports."""

    def __init__(self, tmp: Path, name: str, source: str, inventory_file: Path | None) -> None:
        self.tmp = tmp / name
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.state = self.tmp / "state"
        self.source = source
        self.inventory_file = inventory_file
        self.dashboard = free_ports(2)
        self.registry = free_ports(2)
        self.router = free_ports(2)
        self.file = self.tmp / "corral.toml"
        self.env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
        self.env["PYTHONUNBUFFERED"] = "1"
        if inventory_file is not None:
            self.env[ENV_VAR] = str(inventory_file)

    def write_config(self, body: str, gpus: list[int] | None = None) -> None:
        """The ``[corral]``, dashboard, registry and router tables, then ``body`` (the entries)."""
        head = f'[corral]\nstate_dir = "{self.state}"\n'
        if gpus is not None:
            head += f"gpus = {gpus}\n"
        head += (
            f'[dashboard]\nport = {self.dashboard}\ntoken = "{TOKEN}"\n'
            f"[registry]\nport = {self.registry}\n"
            f"[router]\nport = {self.router}\n"
        )
        self.file.write_text(head + body)

    def inventory(self) -> Inventory:
        """What the driver reports now (NVML, or the fake driver's file)."""
        return read_inventory(self.inventory_file) if self.inventory_file else read_nvml()

    def corral(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "corral", *args, "-c", str(self.file)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )

    def up(self) -> subprocess.CompletedProcess[str]:
        # Importing torch and creating a CUDA context take a while on a cold machine.
        return self.corral("up", "-d", "--timeout", "240")

    def status(self) -> dict[str, dict[str, Any]]:
        r = self.corral("status", "--json", timeout=60)
        return {s["name"]: s for s in json.loads(r.stdout)["services"]}

    def api(self, path: str) -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.dashboard}{path}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )

    def running(self) -> bool:
        return (self.state / "launcher.json").exists()

    def close(self) -> None:
        """``corral down``, then SIGKILL whatever a pid file still names (a failed test's leftovers)."""
        if self.running():
            self.corral("down", timeout=120)
        for pid_file in [self.state / "launcher.json", *self.state.rglob("*.pid")]:
            try:
                kill_tree(int(json.loads(pid_file.read_text())["pid"]))
            except (OSError, ValueError, KeyError):
                pass


def sitter(port: int, path: str) -> dict[str, Any]:
    """GET a sitter's ``/health`` or ``/info`` (the sitter listens on the backend's port + 1)."""
    return dict(httpx.get(f"http://127.0.0.1:{port + 1}{path}", timeout=10).json())


def wait_healthy_backend(port: int, not_pid: int | None = None, timeout: float = 240) -> int:
    """The backend PID once the sitter on ``port + 1`` reports it healthy (and not ``not_pid``)."""

    def ready() -> int | None:
        h = sitter(port, "/health")
        ok = h["backend"] == "healthy" and h["pid"] and h["pid"] != not_pid
        return int(h["pid"]) if ok else None

    return int(wait_until(ready, timeout, interval=0.1, what=f"backend on port {port} healthy"))
