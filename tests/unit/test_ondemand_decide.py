"""The pure deciders of on-demand models: model state from replica states, idle unload, and
which idle models to evict so a waking one fits on its GPUs."""

from __future__ import annotations

from corral.launcher.gpu_budget import Holder, choose_evictions
from corral.launcher.ondemand import Group, group_state, idle_to_unload
from corral.proc.events import State

GIB = 1 << 30


def test_group_state_prefers_ready_then_loading_then_failed() -> None:
    assert group_state([(State.HEALTHY, None), (State.STARTING, None)], False) == ("ready", 1, None)
    assert group_state([(State.STARTING, None), (State.FAILED, "boom")], False) == ("loading", 0, None)
    assert group_state([(State.STOPPED, None), (State.FAILED, "boom")], False) == ("failed", 0, "boom")
    assert group_state([(State.STOPPED, None)], False) == ("stopped", 0, None)
    assert group_state([(State.HEALTHY, None)], True) == ("draining", 1, None)


def _group(entry: str, idle_s: float | None = 10.0, models: list[str] | None = None) -> Group:
    return Group(entry, [], models or [f"{entry}-m"], 0, idle_s, 60.0)


def test_idle_to_unload_needs_every_model_idle_and_nothing_in_flight_or_held() -> None:
    a, b, c, d = _group("a"), _group("b"), _group("c"), _group("d", idle_s=None)
    states = {"a": "ready", "b": "ready", "c": "stopped", "d": "ready"}
    act = {
        "a-m": {"in_flight": 0, "held": 0, "idle_s": 11.0},
        "b-m": {"in_flight": 1, "held": 0, "idle_s": 0.0},
        "c-m": {"in_flight": 0, "held": 0, "idle_s": 99.0},
        "d-m": {"in_flight": 0, "held": 0, "idle_s": 99.0},
    }
    assert [g.entry for g in idle_to_unload([a, b, c, d], states, act)] == ["a"]
    act["a-m"]["held"] = 1
    assert idle_to_unload([a], states, act) == []
    assert idle_to_unload([a], states, {}) == []  # the router does not know it yet: never blind


def test_evicts_least_recently_used_idle_models_until_it_fits() -> None:
    holders = [
        Holder("PID 1 train.py", {0: 20 * GIB}),
        Holder("model old", {0: 30 * GIB}, True, last_used=1.0, entry="old"),
        Holder("model new", {0: 20 * GIB}, True, last_used=5.0, entry="new"),
    ]
    # 80 - 70 = 10 free; 30 needed: unloading "old" (least recently used) is enough.
    v = choose_evictions({0: 30 * GIB}, {0: 80 * GIB}, holders)
    assert v.evict == ["old"] and v.refused is None
    assert choose_evictions({0: 5 * GIB}, {0: 80 * GIB}, holders).evict == []


def test_refuses_naming_holders_when_busy_and_foreign_use_leave_too_little() -> None:
    holders = [
        Holder("PID 1 train.py", {0: 50 * GIB}),
        Holder("model busy", {0: 20 * GIB}, False, entry="busy", note="in use"),
        Holder("model idle", {0: 5 * GIB}, True, entry="idle"),
    ]
    v = choose_evictions({0: 20 * GIB}, {0: 80 * GIB}, holders)
    assert v.evict == []  # nothing is unloaded when it would not be enough anyway
    assert v.refused is not None
    assert "GPU 0 needs 20.0 GiB" in v.refused and "PID 1 train.py (50.0 GiB)" in v.refused
    assert "model busy (20.0 GiB, in use)" in v.refused
    # Only other GPUs are full: no eviction there, and an unknown-size GPU always fits.
    assert choose_evictions({1: GIB}, {0: 80 * GIB, 1: 0}, holders).refused is None
