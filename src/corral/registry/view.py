"""A live local copy of the registry, kept from the watch stream (what the router routes from)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from corral.registry.client import RegistryClient, WatchEvent

log = logging.getLogger("corral.registry.client")


@dataclass(frozen=True)
class ViewChange:
    """What changed in the view: after a ``snapshot`` re-read ``view.instances`` whole."""

    type: Literal["snapshot", "put", "delete"]
    revision: int
    instance: dict[str, Any] | None  # the new state (put) or the removed instance (delete)
    previous: dict[str, Any] | None  # the state before a put or delete


class RegistryView:
    """``instances`` ({id: instance}) mirrors the registry; ``on_change`` and ``changes()`` observe it.

    Callbacks run synchronously in the watch task, in revision order; they must not block.
    """

    def __init__(self, client: RegistryClient, on_change: Callable[[ViewChange], None] | None = None) -> None:
        self.client = client
        self.instances: dict[str, dict[str, Any]] = {}
        self.revision = 0
        self.synced = asyncio.Event()  # set once the first snapshot has arrived
        self._callbacks: list[Callable[[ViewChange], None]] = [on_change] if on_change else []
        self._queues: set[asyncio.Queue[ViewChange]] = set()
        self._task: asyncio.Task[None] | None = None

    def on_change(self, callback: Callable[[ViewChange], None]) -> None:
        """Call ``callback`` with every later change."""
        self._callbacks.append(callback)

    async def changes(self) -> AsyncIterator[ViewChange]:
        """Every later change, as an async iterator (one queue per iterator)."""
        q: asyncio.Queue[ViewChange] = asyncio.Queue()
        self._queues.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._queues.discard(q)

    def healthy(self, model: str | None = None, kind: str = "backend") -> list[dict[str, Any]]:
        """Healthy instances of ``kind`` (serving ``model`` when given)."""
        return [
            i
            for i in self.instances.values()
            if i["state"] == "healthy"
            and not i.get("draining")
            and i["kind"] == kind
            and (model is None or model in i["models"])
        ]

    def start(self) -> None:
        """Start following the registry in a background task."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow(), name="registry-view")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> RegistryView:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_synced(self, timeout: float = 10.0) -> None:
        """Wait for the first snapshot (TimeoutError after ``timeout`` s)."""
        await asyncio.wait_for(self.synced.wait(), timeout)

    def apply(self, event: WatchEvent) -> ViewChange:
        """Fold one watch event into the view and tell the observers."""
        if event.type == "snapshot":
            self.instances = {i["id"]: i for i in event.instances}
            change = ViewChange("snapshot", event.revision, None, None)
            self.synced.set()
        else:
            assert event.instance is not None
            iid = event.instance["id"]
            if event.type == "delete":
                previous = self.instances.pop(iid, None)
            else:
                previous = self.instances.get(iid)
                self.instances[iid] = event.instance
            change = ViewChange(event.type, event.revision, event.instance, previous)
        self.revision = event.revision
        for cb in self._callbacks:
            try:
                cb(change)
            except Exception:  # an observer's bug must not stop the view
                log.exception("registry view callback failed")
        for q in self._queues:
            q.put_nowait(change)
        return change

    async def _follow(self) -> None:
        # since=0 first: a fresh view always starts from a snapshot; reconnects resume by revision.
        async for event in self.client.watch(since=self.revision):
            self.apply(event)
