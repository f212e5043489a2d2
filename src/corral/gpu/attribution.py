"""Which corral service holds which GPU memory: NVML's PIDs matched against process trees.

A service is named by its root PID(s) (the sitter's backend, a launcher replica); every descendant
counts, because engines keep the CUDA context in worker processes (vLLM's ``VLLM::EngineCore``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from corral.gpu.inventory import GpuInfo, Inventory, gib
from corral.proc.tree import children_map, process_tree

MAX_COMMAND = 160


@dataclass(frozen=True)
class Holder:
    """A process holding memory on one GPU; ``service`` is None for a foreign process."""

    pid: int
    command: str
    used_memory: int
    service: str | None = None

    def describe(self) -> str:
        """``service chat-0 (30.1 GiB)`` or ``PID 4242 python train.py (20.0 GiB)``."""
        if self.service is not None:
            return f"service {self.service} ({gib(self.used_memory)})"
        cmd = f" {self.command}" if self.command else ""
        return f"PID {self.pid}{cmd} ({gib(self.used_memory)})"


@dataclass(frozen=True)
class GpuUsage:
    """One GPU's totals and every holder on it, services and foreign processes alike."""

    index: int
    uuid: str
    name: str
    memory_total: int
    memory_used: int
    memory_free: int
    utilization_percent: int | None
    holders: list[Holder] = field(default_factory=list)

    def describe_holders(self) -> str:
        """Holders merged per service, biggest first: what a refusal message prints."""
        merged: dict[str, Holder] = {}
        for h in self.holders:
            key = f"s:{h.service}" if h.service is not None else f"p:{h.pid}"
            old = merged.get(key)
            merged[key] = (
                h if old is None else Holder(old.pid, old.command, old.used_memory + h.used_memory, h.service)
            )
        parts = [h.describe() for h in sorted(merged.values(), key=lambda h: -h.used_memory)]
        return ", ".join(parts) if parts else "no listed process"


@dataclass(frozen=True)
class ServiceUsage:
    """What one service holds: its GPUs and bytes in all (and per GPU)."""

    name: str
    gpus: list[int]
    memory_bytes: int
    memory_by_gpu: dict[int, int] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)  # the tree's PIDs that hold GPU memory


@dataclass(frozen=True)
class Attribution:
    """The inventory with every GPU PID assigned to a service or marked foreign."""

    gpus: list[GpuUsage]
    services: dict[str, ServiceUsage]
    source: str
    message: str | None = None

    def gpu(self, index: int) -> GpuUsage | None:
        """The usage of GPU ``index``, if present."""
        return next((g for g in self.gpus if g.index == index), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``corral gpus --json``, the control API)."""
        return {
            "source": self.source,
            "message": self.message,
            "gpus": [asdict(g) for g in self.gpus],
            "services": {n: asdict(s) for n, s in self.services.items()},
        }


def command_of(pid: int) -> str:
    """A process's command line (its title, for engines that set one), shortened; "" when gone."""
    try:
        p = psutil.Process(pid)
        cmd = " ".join(p.cmdline()) or p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""
    return cmd if len(cmd) <= MAX_COMMAND else cmd[: MAX_COMMAND - 1] + "…"


def _roots(value: int | Iterable[int]) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


def attribute(inventory: Inventory, services: Mapping[str, int | Iterable[int]] | None = None) -> Attribution:
    """Map each GPU compute PID to the service whose process tree contains it.

    ``services`` maps a service name to its root PID(s). PIDs in no tree are foreign and are listed
    with their command line. Reads the process table once per call.
    """
    services = services or {}
    owner: dict[int, str] = {}
    if services and inventory.gpus:
        kids = children_map()
        for name, roots in services.items():
            for pid in process_tree(_roots(roots), kids):
                owner.setdefault(pid, name)
    gpus = [_usage(g, owner) for g in inventory.gpus]
    per: dict[str, ServiceUsage] = {}
    for name in services:
        by_gpu: dict[int, int] = {}
        pids: list[int] = []
        for g in gpus:
            for h in g.holders:
                if h.service == name:
                    by_gpu[g.index] = by_gpu.get(g.index, 0) + h.used_memory
                    if h.pid not in pids:
                        pids.append(h.pid)
        per[name] = ServiceUsage(name, sorted(by_gpu), sum(by_gpu.values()), by_gpu, pids)
    return Attribution(gpus, per, inventory.source, inventory.message)


def _usage(g: GpuInfo, owner: Mapping[int, str]) -> GpuUsage:
    holders = [Holder(p.pid, command_of(p.pid), p.used_memory, owner.get(p.pid)) for p in g.processes]
    return GpuUsage(
        g.index, g.uuid, g.name, g.memory_total, g.memory_used, g.memory_free, g.utilization_percent, holders
    )
