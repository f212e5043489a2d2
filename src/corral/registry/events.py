"""The change log: a bounded ring of encoded events and the fan-out to watchers.

Each event is encoded to bytes once and the same bytes go to every watcher. A watcher owns a
bounded queue; a writer never waits on it. When a watcher falls too far behind, its queue is
dropped and it is sent a fresh snapshot instead (see ``watch.stream``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from typing import Any

DEFAULT_HISTORY = 10_000
DEFAULT_WATCHER_QUEUE = 2_000

# Queue items: (revision, encoded line); None tells the stream to re-snapshot or stop.
Item = tuple[int, bytes] | None


def encode(doc: dict[str, Any]) -> bytes:
    """One newline-terminated JSON line."""
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


class Watcher:
    """One open watch stream's inbox."""

    __slots__ = ("closed", "queue")

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize)
        self.closed = False

    def reset(self) -> None:
        """Drop what is queued and leave a single marker: re-snapshot (or stop, if closed)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class EventLog:
    """Revisions ``base+1 .. revision`` are retained; older ones need a snapshot."""

    def __init__(
        self, revision: int = 0, history: int = DEFAULT_HISTORY, queue_size: int = DEFAULT_WATCHER_QUEUE
    ) -> None:
        self.revision = revision
        self.base = revision
        self._ring: deque[tuple[int, bytes]] = deque(maxlen=history)
        self._watchers: set[Watcher] = set()
        self._queue_size = queue_size
        self.overflows = 0

    def append(self, kind: str, instance: dict[str, Any]) -> int:
        """Record a change (bumping the revision) and push it to every watcher; returns the revision."""
        revision = self.revision + 1
        self.add(revision, encode({"type": kind, "revision": revision, "instance": instance}))
        return revision

    def add(self, revision: int, line: bytes) -> None:
        """Record an event numbered elsewhere (the Redis store's shared counter) and push it.

        Older revisions are ignored; a gap (events this log never saw) restarts the history there
        and sends every watcher a fresh snapshot, since replaying across the gap would lie.
        """
        if revision <= self.revision:
            return
        gap = revision != self.revision + 1
        if gap:
            self._ring.clear()
            self.base = revision - 1
        self.revision = revision
        if len(self._ring) == self._ring.maxlen:
            self.base = self._ring[0][0]
        item = (revision, line)
        self._ring.append(item)
        if gap:
            for w in self._watchers:
                w.reset()
            return
        for w in self._watchers:
            try:
                w.queue.put_nowait(item)
            except asyncio.QueueFull:
                self.overflows += 1
                w.reset()

    def replay(self, since: int) -> list[tuple[int, bytes]] | None:
        """Events after ``since``, or None when they are no longer retained (or never were)."""
        if since <= 0 or not self.base <= since <= self.revision:
            return None
        return list(itertools.islice(self._ring, since - self.base, None))

    def subscribe(self) -> Watcher:
        """A new watcher that receives every event appended from now on."""
        w = Watcher(self._queue_size)
        self._watchers.add(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        """Stop delivering to ``w``."""
        self._watchers.discard(w)

    def close_all(self) -> None:
        """End every open stream (shutdown): they would otherwise hold the server open."""
        for w in self._watchers:
            w.closed = True
            w.reset()

    @property
    def watchers(self) -> int:
        """How many streams are open."""
        return len(self._watchers)
