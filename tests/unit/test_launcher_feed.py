"""The launcher's event feed (behind /api/events): no event lost between subscribing and reading,
and a quiet spell (the SSE keep-alive timeout) never ends a subscription."""

from __future__ import annotations

from corral.launcher.orchestrator import EventFeed


async def test_subscription_sees_events_published_before_its_first_read() -> None:
    feed = EventFeed()
    sub = feed.subscribe()
    feed.publish({"name": "a", "state": "restarting"})
    assert await sub.get(1.0) == {"name": "a", "state": "restarting"}
    sub.close()


async def test_a_timed_out_read_keeps_the_subscription() -> None:
    feed = EventFeed()
    sub = feed.subscribe()
    assert await sub.get(0.01) is None
    feed.publish({"name": "a", "state": "starting"})
    assert await sub.get(1.0) == {"name": "a", "state": "starting"}
    sub.close()
    feed.publish({"name": "a", "state": "healthy"})
    assert await sub.get(0.01) is None  # closed: no longer fed


async def test_replay_sends_the_history_first() -> None:
    feed = EventFeed()
    feed.publish({"name": "a", "state": "starting"})
    sub = feed.subscribe(replay=True)
    feed.publish({"name": "a", "state": "healthy"})
    assert [await sub.get(1.0), await sub.get(1.0)] == [
        {"name": "a", "state": "starting"},
        {"name": "a", "state": "healthy"},
    ]
    sub.close()
