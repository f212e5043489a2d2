"""``prefix_affinity``: the same conversation goes to the same instance (its KV cache is warm).

The key is, in order: the ``X-Session-ID`` header, the body's ``user`` field, else a hash of the
conversation's start (first messages / prompt prefix), computed by the request context. Keys map
onto a consistent-hash ring with virtual nodes, so adding an instance moves about 1/N of the keys;
an instance that is unhealthy or full is not a candidate, so its keys spill to the next on the ring.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Any

from corral.router.instance import Instance

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

    def lookup(self, key: bytes) -> str:
        """The URL owning ``key``: the first point clockwise from its hash."""
        i = bisect.bisect(self.hashes, _hash(key))
        return self.urls[i % len(self.urls)]


_rings: dict[tuple[str, ...], Ring] = {}


def ring_for(urls: tuple[str, ...]) -> Ring:
    """A cached ring for this exact candidate set."""
    ring = _rings.get(urls)
    if ring is None:
        if len(_rings) >= _MAX_RINGS:
            _rings.clear()
        ring = _rings[urls] = Ring(list(urls))
    return ring


def select(candidates: list[Instance], ctx: Any) -> Instance | None:
    """The ring owner of the request's affinity key; least loaded when there is no key."""
    key: bytes | None = ctx.affinity_key() if ctx is not None else None
    if not key:
        return min(candidates, key=lambda i: i.outstanding)
    urls = tuple(i.url for i in candidates)
    owner = ring_for(urls).lookup(key)
    for inst in candidates:
        if inst.url == owner:
            return inst
    return candidates[0]
