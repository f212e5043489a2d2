"""Process states and their change events, fanned out to any number of subscribers.

Each subscriber owns a bounded queue: when it falls behind, its oldest events are dropped (and
counted) rather than ever blocking the supervisor that publishes them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """Lifecycle states; the strings are what goes on the wire."""

    STOPPED = "stopped"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    FAILED = "failed"


@dataclass(frozen=True)
class StateEvent:
    """One state change. ``exit_code`` is negative (-N) when signal N ended the process."""

    name: str
    state: State
    previous: State
    at: float  # time.time()
    pid: int | None
    restarts: int
    reason: str | None
    exit_code: int | None


class Subscription(AsyncIterator[StateEvent]):
    """An async iterator over every event published after it was created."""

    def __init__(self, hub: EventHub, maxsize: int) -> None:
        self._queue: asyncio.Queue[StateEvent] = asyncio.Queue(maxsize)
        self._hub = hub
        self.dropped = 0
        hub._subs.add(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> StateEvent:
        return await self._queue.get()

    def _offer(self, event: StateEvent) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # a slow reader loses its oldest event, never blocks us
            self.dropped += 1
        self._queue.put_nowait(event)

    def close(self) -> None:
        """Stop receiving events."""
        self._hub._subs.discard(self)

    async def aclose(self) -> None:
        """Async spelling of :meth:`close`."""
        self.close()


class EventHub:
    """Publishes StateEvents to subscribers; subscriptions dropped by their owner are forgotten."""

    def __init__(self, maxsize: int = 256) -> None:
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._maxsize = maxsize

    def subscribe(self) -> Subscription:
        """A new subscription that sees every later event."""
        return Subscription(self, self._maxsize)

    def publish(self, event: StateEvent) -> None:
        """Deliver ``event`` to every subscriber without waiting."""
        for sub in list(self._subs):
            sub._offer(event)
