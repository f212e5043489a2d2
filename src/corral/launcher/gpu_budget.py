"""GPU budget of on-demand models: what must be unloaded so that a waking model fits.

Memory on a GPU is counted as: foreign use (processes outside corral, as measured) plus, for each
replica corral runs there, the larger of its declared ``gpu_memory_gb`` and what it was measured
to hold. A model to wake needs its declared memory on each of its GPUs. When some GPU lacks it,
the least recently used idle on-demand models on that GPU are unloaded first; a busy one (a
request in flight or held) and an ``always`` one never are. :func:`choose_evictions` is pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from corral.gpu.inventory import gib


@dataclass(frozen=True)
class Holder:
    """Something holding memory on GPUs: a running corral model or a foreign process."""

    name: str  # "model od" / "service chat-0" / "PID 42 python train.py"
    by_gpu: dict[int, int]  # GPU index -> bytes
    evictable: bool = False  # an idle on-demand model
    last_used: float = 0.0  # monotonic: least recently used goes first
    entry: str | None = None  # the on-demand entry to unload
    note: str = ""  # why it cannot be unloaded, for the refusal message ("busy", "always on")


@dataclass
class Verdict:
    """Either the entries to unload (maybe none) or why nothing can be freed."""

    evict: list[str] = field(default_factory=list)
    refused: str | None = None


def choose_evictions(need: dict[int, int], total: dict[int, int], holders: Iterable[Holder]) -> Verdict:
    """Entries to unload so ``need`` (GPU -> bytes) fits, least recently used first; or the
    refusal naming who holds each short GPU's memory. A GPU of unknown size (0) always fits."""
    hs = list(holders)
    used = {g: sum(h.by_gpu.get(g, 0) for h in hs) for g in need}

    def short() -> list[int]:
        return [g for g, n in need.items() if total.get(g) and total[g] - used[g] < n]

    lacking = short()
    if not lacking:
        return Verdict()
    evict: list[str] = []
    for h in sorted((h for h in hs if h.evictable and h.entry), key=lambda h: h.last_used):
        if not any(h.by_gpu.get(g) for g in lacking):
            continue
        assert h.entry is not None
        evict.append(h.entry)
        for g in used:
            used[g] -= h.by_gpu.get(g, 0)
        lacking = short()
        if not lacking:
            return Verdict(evict)
    parts = []
    for g in lacking:
        on = sorted((h for h in hs if h.by_gpu.get(g)), key=lambda h: -h.by_gpu[g])
        who = ", ".join(f"{h.name} ({gib(h.by_gpu[g])}{', ' + h.note if h.note else ''})" for h in on)
        parts.append(
            f"GPU {g} needs {gib(need[g])} but has {gib(max(0, total[g] - used[g]))} free "
            f"after unloading every idle on-demand model; held by {who or 'nothing corral can see'}"
        )
    return Verdict(refused="; ".join(parts))
