"""The fair queue's ordering core: priority first, then keys in turn, one key's items in order."""

from __future__ import annotations

import pytest

from corral.router.queue import FairQueue


def drain(q: FairQueue[str]) -> list[str]:
    return [q.pop() for _ in range(len(q))]


def test_one_key_is_a_fifo() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(5):
        q.push(f"r{i}")
    assert drain(q) == ["r0", "r1", "r2", "r3", "r4"]
    assert not q and len(q) == 0


def test_keys_take_turns_within_a_priority() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(4):
        q.push(f"a{i}", "A")
    q.push("b0", "B")
    q.push("b1", "B")
    q.push("c0", "C")
    assert drain(q) == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_lower_priority_number_goes_first_and_strictly() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("low1", "B", 5)
    q.push("hi1", "A", 1)
    q.push("low2", "B", 5)
    q.push("hi2", "A", 1)
    assert q.pop() == "hi1"
    q.push("hi3", "C", 1)
    assert drain(q) == ["hi2", "hi3", "low1", "low2"]


def test_a_key_that_starts_waiting_joins_the_end_of_the_rotation() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("a0", "A")
    q.push("a1", "A")
    q.push("b0", "B")
    assert q.pop() == "a0"
    q.push("c0", "C")
    assert drain(q) == ["b0", "a1", "c0"]


def test_remove_keeps_the_rest_in_order_and_drops_empty_keys() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("a0", "A")
    q.push("b0", "B")
    q.push("a1", "A")
    q.push("x0", "X", 9)
    q.remove("b0")  # B's only item: B leaves the rotation
    q.remove("x0")  # the only item at priority 9: the level goes
    assert q.depth_by_key() == {"A": 2}
    assert drain(q) == ["a0", "a1"]
    with pytest.raises(ValueError):
        q.remove("a0")
    with pytest.raises(IndexError):
        q.pop()


def test_equal_priorities_share_evenly_under_constant_backlog() -> None:
    # Two keys that always have work queued, one with 32 waiting and one with 2, get alternate slots.
    q: FairQueue[str] = FairQueue()
    for i in range(32):
        q.push(f"a{i}", "A")
    q.push("b", "B")
    q.push("b", "B")
    served = {"A": 0, "B": 0}
    for _ in range(200):
        item = q.pop()
        k = "A" if item.startswith("a") else "B"
        served[k] += 1
        q.push(item, k)  # a closed-loop client comes straight back
    assert served == {"A": 100, "B": 100}
    assert len(q) == 34
