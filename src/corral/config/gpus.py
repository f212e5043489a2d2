"""Which GPUs each replica gets: the live inventory, restricted by ``[corral] gpus``, and
:func:`corral.gpu.place` applied entry by entry (so entries never take each other's GPUs).

A count that can never fit (3 GPUs asked, 2 exist) is a config error; a memory shortfall on
today's inventory fails only the replicas that do not fit (``Placement.errors``), so the rest of
the fleet still starts.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.config.models import BackendConfig, ServiceConfig
    from corral.gpu import Attribution, Inventory


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


def candidate_inventory(configured: int | list[int] | None, override: list[int] | None = None) -> Inventory:
    """The GPUs placement may use: the live inventory (NVML or ``CORRAL_GPU_INVENTORY``) restricted
    to ``[corral] gpus``; without one, ``[corral] gpus`` / ``nvidia-smi -L`` with no memory figures.
    ``override`` (tests) is a static list of ids."""
    from corral.gpu import Inventory, read_inventory, static_inventory

    if override is not None:
        return static_inventory(list(override))
    inv = read_inventory()
    if not inv.gpus:
        return static_inventory(available_gpus(configured))
    if configured is None:
        return inv
    allowed = set(configured) if isinstance(configured, list) else set(range(configured))
    return Inventory([g for g in inv.gpus if g.index in allowed], inv.source, inv.message)


class GpuShortage(Exception):
    """Asked for more GPUs than the candidate set has: a config error, whatever is free."""


@dataclass
class Placement:
    """GPUs per replica of one entry; ``errors[i]`` is why replica ``i`` got none (it fails)."""

    gpus: list[list[int]]
    errors: dict[int, str] = field(default_factory=dict)


class GpuPlanner:
    """Places entry after entry on one inventory: automatic placement never reuses another
    entry's GPUs, and memory promised to earlier replicas (``gpu_memory_gb``) counts as used."""

    def __init__(self, inventory: Inventory) -> None:
        from corral.gpu import attribute

        self.inventory = inventory
        self.holders: Attribution = attribute(inventory, {})
        self.taken: set[int] = set()
        self.promised: dict[int, int] = {}

    def _view(self, exclude: set[int]) -> Inventory:
        from corral.gpu import Inventory

        gpus = [
            replace(g, memory_free=max(0, g.memory_free - self.promised.get(g.index, 0)))
            if g.memory_total
            else g
            for g in self.inventory.gpus
            if g.index not in exclude
        ]
        return Inventory(gpus, self.inventory.source, self.inventory.message)

    def place(self, e: BackendConfig | ServiceConfig, n: int) -> Placement:
        """GPUs for the ``n`` replicas of ``e``; GpuShortage or PlacementError (structure) for a
        config that can never be placed."""
        from corral.gpu import GIB, PlacementError, place

        # An on-demand model is not running now: its memory is checked (and others unloaded to
        # make room) when it wakes (corral.launcher.gpu_budget), not promised at start.
        mem = None if getattr(e, "start", "always") == "on_demand" else e.gpu_memory_gb
        need = int(mem * GIB) if mem else 0
        if e.gpus is not None:
            # Structure (count, duplicates, sharing, existence) first: a config error.
            if not self.inventory.gpus and any(e.gpus):
                first = next(i for ids in e.gpus for i in ids)
                raise GpuShortage(
                    f"GPU {first} does not exist (no GPU is visible: [corral] gpus, or nvidia-smi)"
                )
            place(n, 0, self.inventory, e.share_gpus, e.gpus)
            out = Placement([[] for _ in range(n)])
            for i, ids in enumerate(e.gpus):
                try:
                    out.gpus[i] = place(1, 0, self._view(set()), True, [ids], mem)[0]
                except PlacementError as exc:
                    out.errors[i] = str(exc)
                    continue
                self._promise(out.gpus[i], need)
            return out
        k = e.gpus_per_replica
        if not k:
            return Placement([[] for _ in range(n)])
        view = self._view(self.taken)
        pool = len(self.inventory.gpus)
        wanted = k if e.share_gpus else k * n
        if wanted > len(view.gpus):
            raise GpuShortage(
                f"{n} replica(s) x {k} GPU(s) need {wanted} free GPUs but only {len(view.gpus)} of "
                f"{pool} are left ([corral] gpus, or the GPUs visible)"
            )
        try:
            gpus = place(n, k, view, e.share_gpus, None, mem, self.holders)
            out = Placement(gpus)
        except PlacementError as exc:
            # Place as many replicas as fit; the others fail with the reason.
            fit: list[list[int]] = []
            for m in range(n - 1, 0, -1):
                try:
                    fit = place(m, k, view, e.share_gpus, None, mem, self.holders)
                    break
                except PlacementError:
                    continue
            out = Placement(fit + [[] for _ in range(n - len(fit))])
            out.errors = {i: str(exc) for i in range(len(fit), n)}
        for ids in out.gpus:
            self.taken.update(ids)
            self._promise(ids, need)
        return out

    def _promise(self, ids: list[int], need: int) -> None:
        for i in ids:
            self.promised[i] = self.promised.get(i, 0) + need
