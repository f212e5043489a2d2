"""``prefix_affinity``: the same conversation goes to the same instance (its KV cache is warm).

The key is, in order: the ``X-Session-ID`` header, the body's ``user`` field, else a hash of the
conversation's start (first messages / prompt prefix), computed by the request context. Keys map
onto a consistent-hash ring with virtual nodes over every instance of the model, so adding one
moves about 1/N of the keys; an instance that is unhealthy or full is not routable, so its keys
spill to the next routable point clockwise. The ring changes only when the model's instances
change (not when one flaps), and then only by the points of the instances that came or went
(kept on the model's routable set across changes); a lookup is a bisection: O(log n).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from typing import Any

from corral.router.instance import Instance
from corral.router.routable import Routable

VNODES = 160
_TOP = "\U0010ffff"  # sorts after every id: (h, _TOP) is past every point of hash h


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Ring:
    """A consistent-hash ring of names (instance ids) with ``vnodes`` points each.

    Changed one name at a time: adding or removing one hashes its own points and inserts or
    deletes them by bisection; no other name is rehashed, so a change costs ``vnodes`` hashes
    and memmoves (~5 ms at 1,000 names), not a rebuild (~0.5 s).
    """

    def __init__(self, names: Iterable[str] = (), vnodes: int = VNODES) -> None:
        self.vnodes = vnodes
        self.names: set[str] = set()
        self.points: list[tuple[int, str]] = []  # (hash, name), sorted
        self.update(names, ())

    def _points(self, name: str) -> list[tuple[int, str]]:
        return [(_hash(f"{name}#{v}".encode()), name) for v in range(self.vnodes)]

    def update(self, added: Iterable[str], removed: Iterable[str]) -> None:
        """Add and remove names (each name's points only)."""
        gone = [n for n in removed if n in self.names]
        new = [n for n in dict.fromkeys(added) if n not in self.names]
        points = self.points
        if len(gone) > 8:  # many at once: one pass over the ring beats many bisections
            drop = set(gone)
            points = self.points = [p for p in points if p[1] not in drop]
        else:
            for name in gone:
                for p in self._points(name):
                    i = bisect.bisect_left(points, p)
                    if i < len(points) and points[i] == p:
                        del points[i]
        self.names.difference_update(gone)
        if new:
            fresh = [p for name in new for p in self._points(name)]
            if len(new) > 8:  # many at once: one merge (timsort, two sorted runs)
                points += sorted(fresh)
                points.sort()
            else:
                for p in fresh:
                    bisect.insort(points, p)
            self.names.update(new)

    def index(self, key: bytes) -> int:
        """The position of the first point clockwise from ``key``'s hash."""
        return bisect.bisect(self.points, (_hash(key), _TOP)) % len(self.points)

    def lookup(self, key: bytes) -> str:
        """The name owning ``key``."""
        return self.points[self.index(key)][1]


class _InstanceRing:
    """A model's ring plus its points' instances, following the model's instance list."""

    __slots__ = ("by_id", "ring", "source")

    def __init__(self) -> None:
        self.ring = Ring()
        self.by_id: dict[str, Instance] = {}  # ids, not URLs: two registrations of one URL are two
        self.source: list[Instance] | None = None

    def sync(self, source: list[Instance]) -> None:
        """Follow a new instance list: only the instances that came or went move points.

        The pool makes a new list whenever a model's instances change, so ``is`` tells."""
        if source is self.source:
            return
        by_id = {i.id: i for i in source}
        old = self.by_id
        self.ring.update((k for k in by_id if k not in old), (k for k in old if k not in by_id))
        self.by_id = by_id
        self.source = source


def select(candidates: Routable, ctx: Any) -> Instance | None:
    """The ring owner of the request's affinity key; least loaded when there is no key."""
    key: bytes | None = ctx.affinity_key() if ctx is not None else None
    if not key:
        return candidates.least_loaded()
    ring = candidates.ring
    if ring is None:
        ring = candidates.ring = _InstanceRing()
    ring.sync(candidates.instances)
    points = ring.ring.points
    if not points:
        return candidates.least_loaded()
    by_id = ring.by_id
    n = len(points)
    i = ring.ring.index(key)
    for k in range(n):  # the owner, or the next routable point clockwise
        inst = by_id[points[(i + k) % n][1]]
        if inst in candidates:
            return inst
    return candidates.least_loaded()
