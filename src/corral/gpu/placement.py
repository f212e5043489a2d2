"""Which GPUs each replica gets: pure functions over an :class:`Inventory` (no NVML, no I/O).

Rules: explicit lists win (checked, never changed); otherwise the GPUs with the most free memory
are taken, and no two replicas share a GPU unless ``share_gpus``. With ``gpu_memory_gb`` a GPU
with less free memory than that is never chosen, and when too few fit the refusal names each GPU,
its free vs needed memory and who holds the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.errors import CorralError
from corral.gpu.attribution import Attribution, GpuUsage, Holder
from corral.gpu.inventory import GIB, GpuInfo, Inventory, gib


class PlacementError(CorralError):
    """The replicas cannot be put on the GPUs asked for or available; the message says why."""


def cuda_visible_devices(gpus: Sequence[int]) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value for a replica's GPUs: ``"0,2"``."""
    return ",".join(str(i) for i in gpus)


def gpu_env(gpus: Sequence[int]) -> dict[str, str]:
    """Environment for a replica: CUDA numbers GPUs fastest-first unless told to use NVML's (PCI) order."""
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": cuda_visible_devices(gpus)}


def _known(g: GpuInfo) -> bool:
    return g.memory_total > 0  # static inventories carry no memory figures


def _holders(g: GpuInfo, holders: Attribution | None) -> str:
    usage = holders.gpu(g.index) if holders is not None else None
    if usage is None:
        usage = GpuUsage(g.index, g.uuid, g.name, g.memory_total, g.memory_used, g.memory_free, None)
        usage.holders.extend(Holder(p.pid, "", p.used_memory) for p in g.processes)
    return usage.describe_holders()


def shortfall(g: GpuInfo, free: int, need: int, holders: Attribution | None = None) -> str:
    """``GPU 0 (NVIDIA H100): 12.0 GiB free, 40.0 GiB needed; held by service chat-0 (30.1 GiB), ...``"""
    return f"{g.label}: {gib(free)} free, {gib(need)} needed; held by {_holders(g, holders)}"


def place(
    replicas: int,
    gpus_per_replica: int,
    inventory: Inventory,
    share_gpus: bool = False,
    explicit: Sequence[Sequence[int]] | None = None,
    gpu_memory_gb: float | None = None,
    holders: Attribution | None = None,
) -> list[list[int]]:
    """GPU indices for each replica (one list per replica, ascending), or :class:`PlacementError`.

    ``gpu_memory_gb`` is in GiB and is needed on every GPU of a replica; ``holders`` (from
    :func:`corral.gpu.attribute`) lets a refusal name services and commands, not just PIDs.
    """
    if replicas < 0 or gpus_per_replica < 0:
        raise PlacementError(f"replicas ({replicas}) and gpus_per_replica ({gpus_per_replica}) must be >= 0")
    need = int(gpu_memory_gb * GIB) if gpu_memory_gb else 0
    if explicit is not None:
        return _check_explicit(replicas, inventory, share_gpus, explicit, need, holders)
    if gpus_per_replica == 0 or replicas == 0:
        return [[] for _ in range(replicas)]
    if not inventory.gpus:
        why = f": {inventory.message}" if inventory.message else ""
        raise PlacementError(f"{replicas * gpus_per_replica} GPU(s) needed but none is visible{why}")
    if share_gpus:
        return _place_shared(replicas, gpus_per_replica, inventory, need, holders)
    return _place_exclusive(replicas, gpus_per_replica, inventory, need, holders)


def _place_exclusive(
    replicas: int, per: int, inv: Inventory, need: int, holders: Attribution | None
) -> list[list[int]]:
    total = replicas * per
    ranked = sorted(inv.gpus, key=lambda g: (-g.memory_free, g.index))
    fit = [g for g in ranked if not need or not _known(g) or g.memory_free >= need]
    if len(fit) < total:
        head = f"{replicas} replica(s) x {per} GPU(s) need {total} GPU(s)"
        if not need or len(ranked) < total:
            visible = ", ".join(str(g.index) for g in sorted(inv.gpus, key=lambda g: g.index))
            raise PlacementError(
                f"{head} but only {len(ranked)} exist (GPUs {visible}); set share_gpus to share"
            )
        short = [shortfall(g, g.memory_free, need, holders) for g in ranked if g not in fit]
        raise PlacementError(
            f"{head} with {gib(need)} free each, only {len(fit)} have it:\n  " + "\n  ".join(short)
        )
    return [sorted(g.index for g in fit[r * per : (r + 1) * per]) for r in range(replicas)]


def _place_shared(
    replicas: int, per: int, inv: Inventory, need: int, holders: Attribution | None
) -> list[list[int]]:
    if per > len(inv.gpus):
        raise PlacementError(f"a replica needs {per} GPUs but only {len(inv.gpus)} exist")
    free = {g.index: g.memory_free for g in inv.gpus}
    load = {g.index: 0 for g in inv.gpus}
    out: list[list[int]] = []
    for r in range(replicas):
        fit = [g for g in inv.gpus if not need or not _known(g) or free[g.index] >= need]
        if len(fit) < per:
            short = [shortfall(g, free[g.index], need, holders) for g in inv.gpus if g not in fit]
            after = f" once replicas 0-{r - 1} are placed" if r else ""
            raise PlacementError(
                f"replica {r} needs {per} GPU(s) with {gib(need)} free, only {len(fit)} have it{after}:\n  "
                + "\n  ".join(short)
            )
        # Spread first (fewest replicas already there), then the most free memory.
        chosen = sorted(fit, key=lambda g: (load[g.index], -free[g.index], g.index))[:per]
        for g in chosen:
            load[g.index] += 1
            free[g.index] -= need
        out.append(sorted(g.index for g in chosen))
    return out


def _check_explicit(
    replicas: int,
    inv: Inventory,
    share: bool,
    explicit: Sequence[Sequence[int]],
    need: int,
    holders: Attribution | None,
) -> list[list[int]]:
    lists = [list(e) for e in explicit]
    if len(lists) != replicas:
        raise PlacementError(f"explicit GPU lists give {len(lists)} list(s) for {replicas} replica(s)")
    users: dict[int, list[int]] = {}
    for r, gpus in enumerate(lists):
        if len(set(gpus)) != len(gpus):
            raise PlacementError(f"replica {r}: GPU list {gpus} names a GPU twice")
        for i in gpus:
            if inv.gpus and inv.gpu(i) is None:
                have = ", ".join(str(g.index) for g in inv.gpus)
                raise PlacementError(f"replica {r}: GPU {i} does not exist (GPUs {have})")
            users.setdefault(i, []).append(r)
    if not share:
        for i, rs in sorted(users.items()):
            if len(rs) > 1:
                raise PlacementError(
                    f"replicas {', '.join(map(str, rs))} are all given GPU {i}; set share_gpus to allow it"
                )
    if need:
        short = []
        for i, rs in sorted(users.items()):
            g = inv.gpu(i)
            if g is not None and _known(g) and g.memory_free < need * len(rs):
                short.append(shortfall(g, g.memory_free, need * len(rs), holders))
        if short:
            raise PlacementError("not enough free GPU memory:\n  " + "\n  ".join(short))
    return [sorted(gpus) for gpus in lists]
