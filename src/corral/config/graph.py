"""Dependency graphs on the stdlib's graphlib: the cycle, named, and a stable start order."""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence


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
