"""The body of ``GET /v1/watch``: snapshot or replay, then live events, with keep-alives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from corral.registry.events import EventLog, encode

KEEPALIVE_S = 5.0

# A store whose state lives elsewhere (Redis) reads (revision, instances) in one atomic step.
Snapshot = Callable[[], Awaitable[tuple[int, list[dict[str, Any]]]]]


async def stream(
    log: EventLog,
    since: int,
    instances: Callable[[], list[dict[str, Any]]] | None,
    keepalive_s: float = KEEPALIVE_S,
    *,
    snapshot: Snapshot | None = None,
) -> AsyncIterator[bytes]:
    """Newline-delimited JSON: a snapshot line (or the missed events), then every later change.

    The watcher is subscribed and the starting point read in the same step of the event loop,
    so no change can fall between the two. With ``snapshot`` (instead of ``instances``) the
    state is read after subscribing: events it already covers are skipped by revision.
    """

    async def current() -> tuple[int, list[dict[str, Any]]]:
        if snapshot is not None:
            return await snapshot()
        assert instances is not None
        return log.revision, instances()  # no await in between: one step of the loop

    w = log.subscribe()
    try:
        missed = log.replay(since)
        if missed is None:
            last, state = await current()
            yield encode({"type": "snapshot", "revision": last, "instances": state})
        else:
            last = since
            for rev, line in missed:
                last = rev
                yield line
        while True:
            try:
                async with asyncio.timeout(keepalive_s):
                    item = await w.queue.get()
            except TimeoutError:
                yield b"\n"
                continue
            if item is None:
                if w.closed:
                    return
                # This watcher overflowed: what it missed is replaced by the current state.
                last, state = await current()
                yield encode({"type": "snapshot", "revision": last, "instances": state})
                continue
            rev, line = item
            if rev > last:  # events already covered by a snapshot or the replay are skipped
                last = rev
                yield line
    finally:
        log.unsubscribe(w)
