"""prefix_affinity's ring follows the instance set incrementally: only changed instances move."""

from __future__ import annotations

import random

import pytest

from corral.router.context import RequestContext
from corral.router.instance import Instance
from corral.router.policies import prefix_affinity
from corral.router.policies.prefix_affinity import VNODES, Ring
from corral.router.routable import Routable


def test_a_ring_changed_name_by_name_is_the_ring_built_at_once() -> None:
    rng = random.Random(7)
    names = [f"i{k}" for k in range(60)]
    ring = Ring(names[:20], vnodes=16)
    live = set(names[:20])
    for _ in range(40):
        if rng.random() < 0.5 and live:
            gone = rng.sample(sorted(live), min(len(live), rng.choice((1, 1, 12))))  # 12: one pass
            ring.update((), gone)
            live.difference_update(gone)
        else:
            new = rng.sample(names, 3)
            ring.update(new, ())
            live.update(new)
        assert ring.points == Ring(sorted(live), vnodes=16).points
        assert ring.names == live
    fresh = Ring(sorted(live), vnodes=16)
    keys = [f"k{k}".encode() for k in range(500)]
    assert [ring.lookup(k) for k in keys] == [fresh.lookup(k) for k in keys]


def _ctx(user: str) -> RequestContext:
    return RequestContext("r", {"model": "m", "user": user}, None, None)


def test_a_change_of_the_instances_hashes_only_the_points_of_those_that_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real = prefix_affinity._hash

    def counting(data: bytes) -> int:
        nonlocal calls
        calls += 1
        return real(data)

    monkeypatch.setattr(prefix_affinity, "_hash", counting)
    insts = [Instance(f"http://10.0.{k // 250}.{k % 250}:8000", ("m",), state="healthy") for k in range(100)]
    fleet = Routable(insts)
    prefix_affinity.select(fleet, _ctx("alice"))
    assert calls == 100 * VNODES + 1  # the first request builds the ring: every point
    calls = 0
    prefix_affinity.select(fleet, _ctx("bob"))
    assert calls == 1  # the key only

    new = Instance("http://10.9.9.9:8000", ("m",), state="healthy")
    fleet.instances = [*insts, new]  # as the pool does: a new list when the instances change
    fleet.add(new)
    calls = 0
    prefix_affinity.select(fleet, _ctx("carol"))
    assert calls == VNODES + 1  # the new instance's points and the key, nothing else

    fleet.instances = fleet.instances[1:]  # the first one leaves
    fleet.remove(insts[0])
    calls = 0
    owner = prefix_affinity.select(fleet, _ctx("dave"))
    assert calls == VNODES + 1
    assert owner is not insts[0]
    ring = fleet.ring.ring
    assert ring.points == Ring([i.id for i in fleet.instances]).points
