"""The body of ``GET /v1/watch``: snapshot or replay, then live events, with keep-alives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from corral.registry.events import EventLog, encode

KEEPALIVE_S = 5.0


async def stream(
    log: EventLog, since: int, instances: Callable[[], list[dict[str, Any]]], keepalive_s: float = KEEPALIVE_S
) -> AsyncIterator[bytes]:
    """Newline-delimited JSON: a snapshot line (or the missed events), then every later change.

    The watcher is subscribed and the starting point read in the same step of the event loop,
    so no change can fall between the two.
    """
    w = log.subscribe()
    try:
        missed = log.replay(since)
        if missed is None:
            last = log.revision
            yield encode({"type": "snapshot", "revision": last, "instances": instances()})
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
                last = log.revision
                yield encode({"type": "snapshot", "revision": last, "instances": instances()})
                continue
            rev, line = item
            if rev > last:  # events already covered by a snapshot or the replay are skipped
                last = rev
                yield line
    finally:
        log.unsubscribe(w)
