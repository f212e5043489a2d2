"""Dependency graphs on the stdlib's graphlib: the cycle, named, and a stable start order."""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence
from typing import Any


def check_acyclic(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as ``[a, b, a]`` if ``graph`` (node -> dependencies) has one, else None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the one that depends on it; we say "a -> b": a needs b,
        # starting from the cycle's node the config lists first.
        ring = list(reversed(exc.args[1]))[:-1]
        order = {n: i for i, n in enumerate(graph)}
        start = ring.index(min(ring, key=lambda n: order.get(n, len(order))))
        ring = ring[start:] + ring[:start]
        return [*ring, ring[0]]
    return None


def dependency_problem(
    entries: Sequence[tuple[str, Any]], every: set[str], builtin: set[str]
) -> tuple[str, str] | None:
    """Why the ``depends_on`` of ``entries`` cannot hold, as (message, field), or None.

    ``entries``: (field path, backend or service) of the enabled ones; ``every``: every name the
    config defines (enabled or not); ``builtin``: corral's own processes that run (registry, router).
    """
    enabled = {e.name for _, e in entries}
    for where, e in entries:
        for j, d in enumerate(e.depends_on):
            field = f"{where}.depends_on[{j}]"
            if d.name == e.name:
                return f"{e.name!r} depends on itself", field
            if d.name in every and d.name not in enabled:
                return f"depends on {d.name!r}, which is disabled", field
            if d.name not in enabled and d.name not in builtin:
                return f"depends on {d.name!r}, which is not defined", field
    graph = {e.name: [d.name for d in e.depends_on if d.name in enabled] for _, e in entries}
    cycle = check_acyclic(graph)
    if cycle:
        where = next(w for w, e in entries if e.name == cycle[0])
        return f"dependency cycle: {' -> '.join(cycle)}", f"{where}.depends_on"
    return None


def start_order(nodes: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Topological order (dependencies first) that keeps the given order wherever it can.

    Dependencies on names not in ``nodes`` are ignored; raises ValueError naming a cycle.
    """
    known = {n for n, _ in nodes}
    rank = {n: i for i, (n, _) in enumerate(nodes)}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, deps in nodes:
        sorter.add(name, *(d for d in deps if d in known))
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise ValueError(f"dependency cycle: {' -> '.join(reversed(exc.args[1]))}") from None
    ready: set[str] = set()
    order: list[str] = []
    while sorter.is_active():
        ready.update(sorter.get_ready())
        first = min(ready, key=rank.__getitem__)  # the earliest ready one, as the config lists them
        ready.discard(first)
        order.append(first)
        sorter.done(first)
    return order
