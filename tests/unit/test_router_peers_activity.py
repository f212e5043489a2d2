"""Merging the on-demand activity of the router's worker processes (``--workers N``)."""

from __future__ import annotations

from corral.router.peers import merge_activity


def _a(state: str, in_flight: int, held: int, idle_s: float) -> dict[str, object]:
    return {"state": state, "in_flight": in_flight, "held": held, "idle_s": idle_s}


def test_counts_add_up_and_idle_is_the_least() -> None:
    got = merge_activity(
        [{"m": _a("ready", 1, 0, 0.0)}, {"m": _a("ready", 0, 2, 40.0)}, {"n": _a("stopped", 0, 0, 9)}]
    )
    assert got["m"] == _a("ready", 1, 2, 0.0)
    assert got["n"] == _a("stopped", 0, 0, 9)


def test_draining_only_once_every_worker_has_seen_the_drain() -> None:
    # The launcher stops the engine when the model is draining with nothing in flight: a worker
    # that has not seen the drain yet may still send it a request.
    assert (
        merge_activity([{"m": _a("draining", 0, 0, 5)}, {"m": _a("ready", 0, 0, 5)}])["m"]["state"] == "ready"
    )
    assert (
        merge_activity([{"m": _a("ready", 0, 0, 5)}, {"m": _a("draining", 0, 0, 5)}])["m"]["state"] == "ready"
    )
    both = merge_activity([{"m": _a("draining", 0, 0, 5)}, {"m": _a("draining", 0, 0, 6)}])
    assert both["m"] == _a("draining", 0, 0, 5)
