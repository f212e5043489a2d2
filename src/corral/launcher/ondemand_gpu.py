"""What waking an on-demand model needs on its GPUs, read from the fleet as it is now.

Gathers the inputs of the pure decider :func:`corral.launcher.gpu_budget.choose_evictions`: per
GPU, foreign use as measured and, per corral process whose engine runs, the larger of its
declared ``gpu_memory_gb`` and its measured use; which on-demand models are idle enough to evict
(ready, no ``keep_warm``, nothing in flight or held as the router last said).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.launcher.gpu_budget import Holder, Verdict, choose_evictions

if TYPE_CHECKING:
    from corral.launcher.ondemand import Group, OnDemandModels


def budget(m: OnDemandModels, g: Group) -> Verdict:
    """What must be unloaded so ``g``'s replicas whose engines are not up fit on their GPUs
    (blocking: reads the inventory and the process table)."""
    from corral.gpu import GIB, attribute, read_inventory
    from corral.launcher.gpus import service_roots

    need: dict[int, int] = {}
    for p in g.procs:
        if p.gpu_memory_gb and not m.engine_up(p.name):
            for i in p.gpus:
                need[i] = need.get(i, 0) + int(p.gpu_memory_gb * GIB)
    if not need:
        return Verdict()
    inv = read_inventory()
    if not inv.gpus:
        return Verdict()
    att = attribute(inv, service_roots(m.orch))
    holders = [
        Holder(h.describe().rsplit(" (", 1)[0], {gu.index: h.used_memory})
        for gu in att.gpus
        for h in gu.holders
        if h.service is None
    ]
    group_of = {p.name: grp for grp in m.groups.values() for p in grp.procs}
    merged: dict[str, dict[int, int]] = {}
    for p in m.plan.processes:
        if not m.engine_up(p.name):
            continue
        usage = att.services.get(p.name)
        measured = usage.memory_by_gpu if usage is not None else {}
        declared = int(p.gpu_memory_gb * GIB) if p.gpu_memory_gb else 0
        grp = group_of.get(p.name)
        key = f"model {grp.entry}" if grp is not None else f"service {p.name}"
        acc = merged.setdefault(key, {})
        for i in set(p.gpus) | set(measured):
            acc[i] = acc.get(i, 0) + max(declared if i in p.gpus else 0, measured.get(i, 0))
    for key, by_gpu in merged.items():
        grp = m.groups.get(key.removeprefix("model ")) if key.startswith("model ") else None
        idle = grp is not None and grp is not g and evictable(m, grp)
        note = "" if idle else ("always on" if grp is None else "in use")
        holders.append(
            Holder(key, by_gpu, idle, grp.last_used if grp else 0.0, grp.entry if grp else None, note)
        )
    total = {x.index: x.memory_total for x in inv.gpus}
    return choose_evictions(need, total, holders)


def evictable(m: OnDemandModels, g: Group) -> bool:
    """Idle enough to evict: ready, no warm replicas to keep, nothing in flight or held."""
    if g.keep_warm or m.states.get(g.entry) != "ready" or g.entry in m.evicting:
        return False
    if m.activity is None:
        return False  # never evict blind
    acts = [m.activity.get(model) for model in g.models]
    return all(a is not None and not a["in_flight"] and not a["held"] for a in acts)
