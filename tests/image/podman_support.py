"""podman as CI can run it: runc, cgroupfs, deploy/image/containers.conf (``make test-image``)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "deploy" / "image" / "containers.conf"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one podman command; fail with its stderr."""
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    proc = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc


def stop_timed(name: str, grace_s: int = 10) -> tuple[float, int]:
    """``podman stop -t grace_s name``: (seconds it took, the container's exit code)."""
    t0 = time.monotonic()
    podman("stop", "-t", str(grace_s), name, timeout=grace_s + 60)
    took = time.monotonic() - t0
    code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
    return took, int(code)
