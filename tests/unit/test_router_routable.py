"""Per-model routable sets follow every state change, so a request never scans the fleet."""

from __future__ import annotations

import time

from corral.router.instance import CLOSED, Instance
from corral.router.policies import load
from corral.router.pool import Pool
from corral.router.routable import Routable


def _members(pool: Pool, model: str = "m") -> set[str]:
    return {i.url for i in pool.routable.get(model, Routable())}


def _add(pool: Pool, port: int, **kw: object) -> Instance:
    return pool.upsert(Instance(f"http://a:{port}", ("m",), state=str(kw.pop("state", "healthy")), **kw))  # type: ignore[arg-type]


def test_health_changes_move_instances_in_and_out() -> None:
    pool = Pool()
    a, b = _add(pool, 1), _add(pool, 2, state="starting")
    assert _members(pool) == {a.url}
    b.probe_ok = True  # what a probe or a registry put does, then it wakes the pool
    pool.wake(b)
    assert _members(pool) == {a.url, b.url}
    a.on_failure(connect=True)  # notifies the pool through Instance.notify
    assert _members(pool) == {b.url}
    pool.upsert(Instance(b.url, ("m",), id=b.id, state="draining"))  # the registry says: no new work
    assert _members(pool) == set()
    pool.remove(a.id)
    assert set(pool.routable) == {"m"} and pool.by_model["m"][0].state == "draining"
    pool.remove(b.id)
    assert pool.routable == {}


def test_open_circuit_leaves_and_comes_back_for_one_trial() -> None:
    pool = Pool()
    a, b = _add(pool, 1, breaker_failures=1, cooldown_s=0.05), _add(pool, 2)
    a.on_failure()
    assert _members(pool) == {b.url}
    select = load("round_robin")
    assert all(pool.try_acquire("m", select, None) is b for _ in range(4))
    deadline = time.monotonic() + 5
    got = None
    while got is not a and time.monotonic() < deadline:  # after the cool-down: one trial
        got = pool.try_acquire("m", select, None)
    assert got is a and a.trial_in_flight and a.url not in _members(pool)
    a.on_success()
    pool.release(a)
    assert a.circuit is CLOSED and a.url in _members(pool)


def test_full_instance_leaves_until_a_slot_frees_and_loads_stay_counted() -> None:
    pool = Pool()
    a, b = _add(pool, 1, max_concurrency=1), _add(pool, 2)
    select = load("least_outstanding")
    first = pool.try_acquire("m", select, None)
    second = pool.try_acquire("m", select, None)
    assert {first, second} == {a, b} and a.url not in _members(pool)
    assert pool.try_acquire("m", select, None) is b  # a is full
    pool.release(a)
    assert a.url in _members(pool) and pool.try_acquire("m", select, None) is a


def test_replaced_instance_released_later_frees_the_replacement() -> None:
    pool = Pool()
    a = _add(pool, 1)
    assert pool.try_acquire("m", load("round_robin"), None) is a
    fresh = pool.upsert(Instance(a.url, ("m",), id=a.id, state="healthy"))
    assert fresh.outstanding == 1
    pool.release(a)
    assert fresh.outstanding == 0 and pool.routable["m"].least_loaded() is fresh


def test_every_policy_selects_among_routable_only() -> None:
    pool = Pool()
    insts = [_add(pool, p) for p in range(1, 9)]
    for i in insts[::2]:
        i.on_failure(connect=True)
    ok = {i.url for i in insts[1::2]}
    for name in ("round_robin", "least_outstanding", "power_of_two", "prefix_affinity"):
        select = load(name)
        for _ in range(50):
            inst = pool.try_acquire("m", select, None)
            assert inst is not None and inst.url in ok
            pool.release(inst)


def test_a_lone_member_keeps_no_buckets_and_is_filed_afresh_when_a_second_comes() -> None:
    pool = Pool()
    select = load("least_outstanding")
    a = _add(pool, 1)
    for _ in range(5):
        assert pool.try_acquire("m", select, None) is a  # alone: no policy, no bucket moves
    pool.release(a)
    assert a.outstanding == 4
    b = _add(pool, 2)
    got = [pool.try_acquire("m", select, None) for _ in range(3)]
    assert got == [b, b, b] and b.outstanding == 3  # a is filed under 4, not under 0
    assert pool.try_acquire("m", select, None) in (a, b)  # 4 each: either
    for _ in range(a.outstanding):
        pool.release(a)
    assert pool.try_acquire("m", select, None) is a
    pool.remove(b.id)
    pool.remove(a.id)
    c = _add(pool, 3)
    assert pool.try_acquire("m", select, None) is c
