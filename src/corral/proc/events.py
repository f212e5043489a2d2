"""Process states and their change events, fanned out to any number of subscribers.

Each subscriber owns a bounded queue: when it falls behind, its oldest events are dropped (and
counted) rather than ever blocking the supervisor that publishes them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


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


class Subscription(AsyncIterator[T]):
    """Every event published after it was created (and the hub's history, when asked), in order:
    iterate it, or ``get(timeout)``; ``close()`` when done."""

    def __init__(self, hub: EventHub[T], maxsize: int, replay: Iterable[T] = ()) -> None:
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self._hub = hub
        self.dropped = 0
        for event in replay:
            self._offer(event)
        hub._subs.add(self)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        return await self._queue.get()

    async def get(self, timeout: float) -> T | None:
        """The next event, or None after ``timeout`` s without one; the subscription stays open
        either way (cancelling a queue read loses nothing, unlike cancelling an async generator)."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    def _offer(self, event: T) -> None:
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


class EventHub(Generic[T]):
    """Publishes events to subscribers without ever waiting; the one fan-out of corral (a
    supervisor's StateEvents, the launcher's feed behind /api/events). Subscriptions dropped by
    their owner are forgotten; ``history`` keeps the last N events for ``subscribe(replay=True)``."""

    def __init__(self, maxsize: int = 256, *, history: int = 0) -> None:
        self._subs: weakref.WeakSet[Subscription[T]] = weakref.WeakSet()
        self._maxsize = maxsize
        self.history: deque[T] = deque(maxlen=history)

    def subscribe(self, replay: bool = False) -> Subscription[T]:
        """A subscription registered now (not on first read), so no later event is missed;
        ``replay``: the history first."""
        return Subscription(self, self._maxsize, self.history if replay else ())

    def publish(self, event: T) -> None:
        """Deliver ``event`` to every subscriber without waiting."""
        if self.history.maxlen:
            self.history.append(event)
        for sub in list(self._subs):
            sub._offer(event)
