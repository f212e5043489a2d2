"""What GPUs this machine has, how much memory each has free, and which PIDs hold the rest.

Two sources, chosen per call: the JSON file named by ``CORRAL_GPU_INVENTORY`` (machines without a
GPU: CI, demos, tests; schema in docs/gpu.md), else NVML (see :mod:`corral.gpu.nvml`). Nothing here
raises for a missing driver: the inventory is empty and ``message`` says why.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

ENV_VAR = "CORRAL_GPU_INVENTORY"
GIB = 1 << 30


def gib(n_bytes: int | float) -> str:
    """``12.0 GiB``: the one way corral prints an amount of GPU memory."""
    return f"{n_bytes / GIB:.1f} GiB"


@dataclass(frozen=True)
class GpuProcess:
    """A process with a CUDA context on one GPU."""

    pid: int
    used_memory: int  # bytes; 0 where the driver does not report it


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML (or the inventory file) sees it. Memory in bytes."""

    index: int
    uuid: str
    name: str
    memory_total: int  # 0 means unknown: placement then skips memory checks on this GPU
    memory_used: int
    memory_free: int
    utilization_percent: int | None = None
    processes: list[GpuProcess] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``GPU 0 (NVIDIA H100)``, as messages name a GPU."""
        return f"GPU {self.index} ({self.name})"


@dataclass(frozen=True)
class Inventory:
    """Every GPU visible now; ``message`` says why the list is empty (never a traceback)."""

    gpus: list[GpuInfo]
    source: str  # "nvml", "file:PATH" or "none"
    message: str | None = None

    def gpu(self, index: int) -> GpuInfo | None:
        """The GPU with NVML index ``index``, if present."""
        return next((g for g in self.gpus if g.index == index), None)

    def to_dict(self) -> dict[str, Any]:
        """The inventory-file shape (docs/gpu.md), plus ``source`` and ``message``."""
        return {"source": self.source, "message": self.message, "gpus": [asdict(g) for g in self.gpus]}


def static_inventory(indices: list[int], name: str = "GPU") -> Inventory:
    """GPUs known only by index (``[corral] gpus`` without NVML): placement by index, no memory checks."""
    gpus = [
        GpuInfo(index=i, uuid="", name=name, memory_total=0, memory_used=0, memory_free=0) for i in indices
    ]
    return Inventory(gpus=gpus, source="static")


# --- the inventory file -------------------------------------------------------------------------


class _FileProcess(BaseModel):
    model_config = ConfigDict(extra="ignore")
    pid: int
    used_memory: int = 0


class _FileGpu(BaseModel):
    model_config = ConfigDict(extra="ignore")
    index: int
    uuid: str = ""
    name: str = "GPU"
    memory_total: int
    memory_used: int | None = None  # default: the sum of the processes' used_memory
    memory_free: int | None = None  # default: total - used
    utilization_percent: int | None = None
    processes: list[_FileProcess] = []

    def to_info(self) -> GpuInfo:
        procs = [GpuProcess(p.pid, p.used_memory) for p in self.processes]
        used = self.memory_used if self.memory_used is not None else sum(p.used_memory for p in procs)
        free = self.memory_free if self.memory_free is not None else max(self.memory_total - used, 0)
        return GpuInfo(
            index=self.index,
            uuid=self.uuid or f"GPU-file-{self.index}",
            name=self.name,
            memory_total=self.memory_total,
            memory_used=used,
            memory_free=free,
            utilization_percent=self.utilization_percent,
            processes=procs,
        )


class _File(BaseModel):
    model_config = ConfigDict(extra="ignore")
    gpus: list[_FileGpu]


# path -> (stat signature, parsed inventory); the lock because release polls from worker threads.
_file_cache: dict[str, tuple[tuple[int, ...], Inventory]] = {}
_file_lock = threading.Lock()


def _read_file(path: str) -> Inventory:
    source = f"file:{path}"
    try:
        st = os.stat(path)
    except OSError as exc:
        return Inventory([], source, f"GPU inventory file {path}: {exc.strerror or exc}")
    # mtime alone can miss two writes within one clock tick; inode and size catch atomic replaces.
    key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
    with _file_lock:
        hit = _file_cache.get(path)
        if hit and hit[0] == key:
            return hit[1]
    try:
        data = _File.model_validate_json(Path(path).read_bytes())
    except OSError as exc:
        return Inventory([], source, f"GPU inventory file {path}: {exc.strerror or exc}")
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(document)"
        # Not cached: a half-written file is read again on the next call.
        return Inventory([], source, f"GPU inventory file {path}: {where}: {err['msg']}")
    inv = Inventory([g.to_info() for g in sorted(data.gpus, key=lambda g: g.index)], source)
    if not inv.gpus:
        inv = Inventory([], source, f"GPU inventory file {path} lists no GPUs")
    with _file_lock:
        _file_cache[path] = (key, inv)
    return inv


def read_inventory(path: str | os.PathLike[str] | None = None) -> Inventory:
    """The GPUs now: from ``path``, else the file named by ``$CORRAL_GPU_INVENTORY``, else NVML."""
    chosen = os.fspath(path) if path is not None else os.environ.get(ENV_VAR, "")
    if chosen:
        return _read_file(chosen)
    from corral.gpu.nvml import read_nvml

    return read_nvml()
