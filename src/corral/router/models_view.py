"""The router's model list: every model it can serve now or start on demand, with live state.

Each OpenAI model card gets a ``corral`` object (OpenAI clients ignore unknown fields):
``state`` (ready | loading | stopped | draining | failed), ``replicas_ready``, ``replicas``,
``on_demand`` and, when there is one, ``reason``.
"""

from __future__ import annotations

from typing import Any

from corral.router.ondemand import OnDemand
from corral.router.pool import Pool


def model_state(pool: Pool, ondemand: OnDemand | None, name: str) -> dict[str, Any] | None:
    """The ``corral`` object of one model (aliases resolved); None when the model is unknown."""
    target = pool.aliases.get(name, name)
    insts = pool.by_model.get(target, ())
    ready = sum(1 for i in insts if i.healthy)
    e = ondemand.entries.get(target) if ondemand is not None else None
    if e is None:
        if not insts:
            return None
        # Instances that all say "stopped" (a parked on-demand engine whose model entry has not
        # reached this router yet) are a stopped model, not one loading.
        state = "ready" if ready else "stopped" if all(i.state == "stopped" for i in insts) else "loading"
        return {"state": state, "replicas_ready": ready, "replicas": len(insts)}
    state = e.state
    if state in ("loading", "stopped", "failed") and ready:
        state = "ready"  # the registry's instances are fresher than the launcher's summary
    out: dict[str, Any] = {
        "state": state,
        "replicas_ready": ready,
        "replicas": max(e.replicas, len(insts)),
        "on_demand": True,
    }
    if e.reason and state != "ready":
        out["reason"] = e.reason
    return out


def model_card(pool: Pool, ondemand: OnDemand | None, created: int, name: str) -> dict[str, Any] | None:
    """One OpenAI model card with its ``corral`` state; None when unknown."""
    st = model_state(pool, ondemand, name)
    if st is None:
        return None
    return {"id": name, "object": "model", "created": created, "owned_by": "corral", "corral": st}


def model_names(pool: Pool, ondemand: OnDemand | None) -> list[str]:
    """Served and on-demand model names, then aliases whose target is one of them."""
    names = set(pool.by_model)
    if ondemand is not None:
        names.update(ondemand.entries)
    out = sorted(names)
    out += sorted(a for a, t in pool.aliases.items() if t in names and a not in names)
    return out


def model_cards(
    pool: Pool, ondemand: OnDemand | None, created: int, names: list[str] | None = None
) -> list[dict[str, Any]]:
    """The cards of ``names`` (default: every model the router knows)."""
    todo = model_names(pool, ondemand) if names is None else names
    cards = (model_card(pool, ondemand, created, n) for n in todo)
    return [c for c in cards if c is not None]
