"""Policies decide purely: distribution, load awareness, consistent-hash stickiness."""

from __future__ import annotations

from collections import Counter

from corral.router import policies
from corral.router.context import RequestContext
from corral.router.instance import Instance
from corral.router.policies.prefix_affinity import Ring
from corral.router.routable import Routable


def _insts(n: int) -> Routable:
    return Routable(Instance(f"http://127.0.0.1:{9000 + i}", ("m",), state="healthy") for i in range(n))


def _load(r: Routable, i: int, outstanding: int) -> None:
    inst = r.members[i]
    old, inst.outstanding = inst.outstanding, outstanding
    r.moved(inst, old)


def _ctx(body: dict, session: str | None = None) -> RequestContext:
    return RequestContext("r", body, session, None)


def test_round_robin_is_even() -> None:
    select = policies.load("round_robin")
    insts = _insts(3)
    counts = Counter(select(insts, None).url for _ in range(300))  # type: ignore[union-attr]
    assert sorted(counts.values()) == [100, 100, 100]


def test_least_outstanding_picks_the_idlest() -> None:
    select = policies.load("least_outstanding")
    insts = _insts(3)
    for i, load in enumerate((5, 1, 3)):
        _load(insts, i, load)
    assert all(select(insts, None) is insts.members[1] for _ in range(10))


def test_power_of_two_never_picks_the_busiest_of_two() -> None:
    select = policies.load("power_of_two")
    insts = _insts(2)
    _load(insts, 0, 4)
    assert all(select(insts, None) is insts.members[1] for _ in range(50))
    many = _insts(5)
    _load(many, 0, 100)
    assert Counter(select(many, None) is many.members[0] for _ in range(500))[True] == 0


def test_prefix_affinity_keys() -> None:
    select = policies.load("prefix_affinity")
    insts = _insts(4)
    conv = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    first = select(insts, _ctx({"messages": conv}))
    later = select(insts, _ctx({"messages": [*conv, {"role": "assistant", "content": "a"}]}))
    assert first is later
    assert len({select(insts, _ctx({"user": "bob"})).url for _ in range(10)}) == 1  # type: ignore[union-attr]
    assert len({select(insts, _ctx({}, "sess")).url for _ in range(10)}) == 1  # type: ignore[union-attr]
    assert select(insts, _ctx({"prompt": "x" * 1000})) is select(insts, _ctx({"prompt": "x" * 300}))


def test_prefix_affinity_skips_a_full_instance() -> None:
    select = policies.load("prefix_affinity")
    insts = _insts(3)
    owner = select(insts, _ctx({"user": "u"}))
    assert owner is not None
    insts.remove(owner)  # full: out of the routable set, still on the ring
    assert select(insts, _ctx({"user": "u"})) in insts.members
    insts.add(owner)
    assert select(insts, _ctx({"user": "u"})) is owner


def test_ring_adding_an_instance_moves_few_keys() -> None:
    urls = [f"http://h:{p}" for p in range(8000, 8004)]
    before = Ring(urls)
    after = Ring([*urls, "http://h:8004"])
    keys = [f"key-{i}".encode() for i in range(5000)]
    moved = sum(before.lookup(k) != after.lookup(k) for k in keys)
    assert moved < 5000 * 0.30  # ideal 1/5 = 20%; a modulo hash would move ~80%
    assert all(after.lookup(k) == "http://h:8004" for k in keys if before.lookup(k) != after.lookup(k))
    share = Counter(after.lookup(k) for k in keys)
    assert min(share.values()) > 5000 / 5 * 0.6  # virtual nodes keep shares balanced


def test_unknown_policy_is_a_config_error() -> None:
    import pytest

    from corral.errors import ConfigError

    with pytest.raises(ConfigError, match="round_robin"):
        policies.load("random")
