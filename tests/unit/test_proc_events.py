"""State events fan out to every subscriber; a slow subscriber never blocks the publisher."""

from __future__ import annotations

import asyncio

from corral.proc.events import EventHub, State, StateEvent


def _event(state: State) -> StateEvent:
    return StateEvent("x", state, State.STOPPED, 0.0, None, 0, None, None)


async def test_every_subscriber_gets_every_later_event() -> None:
    hub = EventHub()
    hub.publish(_event(State.FAILED))  # before anyone subscribed: nobody sees it
    a, b = hub.subscribe(), hub.subscribe()
    hub.publish(_event(State.STARTING))
    hub.publish(_event(State.HEALTHY))
    for sub in (a, b):
        got = [(await anext(sub)).state for _ in range(2)]
        assert got == [State.STARTING, State.HEALTHY]


async def test_slow_subscriber_loses_oldest_and_never_blocks() -> None:
    hub = EventHub(maxsize=4)
    slow = hub.subscribe()
    for i in range(10):  # publish is synchronous: it cannot wait on a reader
        hub.publish(StateEvent("x", State.HEALTHY, State.STARTING, float(i), None, i, None, None))
    assert slow.dropped == 6
    got = [(await asyncio.wait_for(anext(slow), 1)).restarts for _ in range(4)]
    assert got == [6, 7, 8, 9]


async def test_closed_subscription_gets_nothing() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    await sub.aclose()
    hub.publish(_event(State.HEALTHY))
    assert sub._queue.empty()
