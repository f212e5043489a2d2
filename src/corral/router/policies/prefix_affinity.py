"""``prefix_affinity``: the same conversation goes to the same instance (its KV cache is warm).

The key is, in order: the ``X-Session-ID`` header, the body's ``user`` field, else a hash of the
conversation's start (first messages / prompt prefix), computed by the request context. Keys map
onto a consistent-hash ring with virtual nodes over every instance of the model, so adding one
moves about 1/N of the keys; an instance that is unhealthy or full is not routable, so its keys
spill to the next routable point clockwise. The ring is rebuilt only when the model's instances
change (not when one flaps), and a lookup is a bisection: O(log n).
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Any

from corral.router.instance import Instance
from corral.router.routable import Routable

VNODES = 160
_MAX_RINGS = 64


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Ring:
    """A consistent-hash ring of instance URLs with ``vnodes`` points each."""

    def __init__(self, urls: list[str], vnodes: int = VNODES) -> None:
        points = sorted((_hash(f"{u}#{v}".encode()), u) for u in urls for v in range(vnodes))
        self.hashes = [h for h, _ in points]
        self.urls = [u for _, u in points]

    def index(self, key: bytes) -> int:
        """The position of the first point clockwise from ``key``'s hash."""
        return bisect.bisect(self.hashes, _hash(key)) % len(self.hashes)

    def lookup(self, key: bytes) -> str:
        """The URL owning ``key``."""
        return self.urls[self.index(key)]


class _InstanceRing:
    """A ring plus its points' instances, for one generation of one model's instances."""

    __slots__ = ("insts", "ring", "source")

    def __init__(self, source: list[Instance]) -> None:
        by_id = {i.id: i for i in source}  # ids, not URLs: two registrations of one URL are two
        self.ring = Ring(list(by_id))
        self.insts = [by_id[k] for k in self.ring.urls]
        self.source = source  # held, so its id() is not reused while cached


# id(the model's instance list) -> its ring. The pool makes a new list whenever a model's
# instances change, so a cached ring is never stale.
_rings: dict[int, _InstanceRing] = {}


def _ring_for(candidates: Routable) -> _InstanceRing:
    source = candidates.instances
    ring = _rings.get(id(source))
    if ring is None or ring.source is not source:
        if len(_rings) >= _MAX_RINGS:
            _rings.clear()
        ring = _rings[id(source)] = _InstanceRing(source)
    return ring


def select(candidates: Routable, ctx: Any) -> Instance | None:
    """The ring owner of the request's affinity key; least loaded when there is no key."""
    key: bytes | None = ctx.affinity_key() if ctx is not None else None
    if not key:
        return candidates.least_loaded()
    ring = _ring_for(candidates)
    insts = ring.insts
    if not insts:
        return candidates.least_loaded()
    n = len(insts)
    i = ring.ring.index(key)
    for k in range(n):  # the owner, or the next routable point clockwise
        inst = insts[(i + k) % n]
        if inst in candidates:
            return inst
    return candidates.least_loaded()
