"""The registry's snapshot file: debounced, atomic writes and a tolerant load.

The file holds the revision and every instance with its absolute lease expiry (Unix time), so a
restarted registry keeps each instance exactly as long as its lease would have lasted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("corral.registry")

FILE_NAME = "registry-snapshot.json"
CHANGE_DELAY_S = 0.5  # debounce after a change of the instance set
LEASE_DELAY_S = 5.0  # heartbeats only move expiries; writing those lazily is enough
_seq = itertools.count()


def load(path: Path) -> dict[str, Any] | None:
    """The snapshot at ``path``; None when there is none. A damaged file is logged and ignored."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable snapshot %s: %s", path, exc)
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
        log.warning("ignoring snapshot %s: not a registry snapshot", path)
        return None
    return doc


def write(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per call: a cancelled background write may still be finishing in its thread.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_seq)}.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SnapshotWriter:
    """Writes ``dump()`` to ``path`` soon after changes, and once more on close."""

    def __init__(self, path: Path, dump: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._dump = dump
        self._dirty = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    def mark(self, changed: bool) -> None:
        """Note that state moved; ``changed`` (the instance set, not just a lease) writes sooner."""
        self._dirty.set()
        if changed:
            self._changed.set()

    def start(self) -> None:
        """Start the background writer."""
        self._task = asyncio.create_task(self._run(), name="registry-snapshot")

    async def close(self) -> None:
        """Stop the writer and write the final state."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._flush()

    def _flush(self) -> None:
        self._dirty.clear()
        self._changed.clear()
        try:
            write(self.path, self._dump())
            self.writes += 1
        except OSError as exc:
            log.error("could not write snapshot %s: %s", self.path, exc)

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LEASE_DELAY_S):
                    await self._changed.wait()
            await asyncio.sleep(CHANGE_DELAY_S)
            # Encode here (a consistent view), write in a thread (fsync must not stall the loop).
            doc = self._dump()
            self._dirty.clear()
            self._changed.clear()
            try:
                await asyncio.to_thread(write, self.path, doc)
                self.writes += 1
            except OSError as exc:
                log.error("could not write snapshot %s: %s", self.path, exc)
