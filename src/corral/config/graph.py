"""Dependency graphs: cycle detection that names the cycle, and a stable topological order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def check_acyclic(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as ``[a, b, a]`` if ``graph`` (node -> dependencies) has one, else None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def start_order(nodes: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Topological order (dependencies first) that keeps the given order wherever it can.

    Dependencies on names not in ``nodes`` are ignored; the caller has checked for cycles.
    """
    known = {n for n, _ in nodes}
    pending = [(n, {d for d in deps if d in known}) for n, deps in nodes]
    done: set[str] = set()
    order: list[str] = []
    while pending:
        for i, (name, deps) in enumerate(pending):
            if deps <= done:
                order.append(name)
                done.add(name)
                del pending[i]
                break
        else:
            raise ValueError(f"dependency cycle among {[n for n, _ in pending]}")
    return order
