"""Helpers for the sitter integration tests: start registry / router / sitter, read state."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx

from support import CorralProcs, free_port, wait_http, wait_until


def start_registry(
    procs: CorralProcs, tmp_path: Path, port: int | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """A real `corral registry` on a free port; returns its URL and process."""
    port = port or free_port()
    proc = procs.start("registry", "--port", str(port), log=tmp_path / "registry.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=30)
    return url, proc


def start_sitter(
    procs: CorralProcs, tmp_path: Path, port: int, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`corral sit --service-type mock` (unless ``extra`` overrides it) with a temp state dir."""
    args = ["sit", "--port", str(port), "--state-dir", str(tmp_path / "state"), "--restart-delay", "0.2"]
    if "--service-type" not in extra:
        args += ["--service-type", "mock", "--models", "m1"]
    return procs.start(*args, *extra, env=env, log=tmp_path / f"sitter-{port}.log")


def sitter_info(port: int) -> dict[str, Any]:
    """The sitter's /info body."""
    return dict(httpx.get(f"http://127.0.0.1:{port + 1}/info", timeout=5).json())


def instances(client: httpx.Client, registry: str) -> dict[str, dict[str, Any]]:
    """The registry's instances by kind ("backend", "sitter")."""
    data = client.get(f"{registry}/v1/instances", timeout=2).json()["data"]
    return {i["kind"]: i for i in data}


def sitter_health(port: int) -> dict[str, Any]:
    """The sitter's /health body (any status)."""
    return dict(httpx.get(f"http://127.0.0.1:{port + 1}/health", timeout=2).json())


def wait_backend_state(port: int, state: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until the sitter on port + 1 reports the backend in ``state``."""
    return dict(wait_until(lambda: (h := sitter_health(port))["backend"] == state and h, timeout, what=state))
