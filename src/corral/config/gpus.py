"""Which GPUs the launcher may hand out (a stand-in until ``corral.gpu`` owns the inventory)."""

from __future__ import annotations

import shutil
import subprocess


def detect_gpu_count() -> int:
    """Number of lines of ``nvidia-smi -L`` (0 when the binary is missing or fails)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def available_gpus(configured: int | list[int] | None) -> list[int]:
    """GPU ids to allocate from: ``[corral] gpus`` (a count or ids), else what nvidia-smi lists."""
    if isinstance(configured, list):
        return list(configured)
    count = detect_gpu_count() if configured is None else configured
    return list(range(count))
