"""The fair wait queue of one model: by priority, then round-robin across keys.

When every replica of a model is at its concurrency limit, requests wait here. The next freed
slot goes to the lowest ``priority`` number that has waiters (as vLLM's priority scheduling:
lower is sooner); within one priority the keys take turns, one request each, and one key's
requests are served in arrival order. So a key with 30 requests queued and a key with 1 both get
the next slot in turn, where a FIFO would make the second wait behind all 30.

Pure ordering, no I/O and no clock: items are opaque (the pool queues futures). Removing an item
(a client that left) is O(items of that key) and drops the key from the rotation when it was its
last. Across priorities the order is strict; a higher number waits while a lower one has work
(bounded anyway by ``queue_timeout_s``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class _Level(Generic[T]):
    """One priority: the keys with waiters in turn order, and each key's waiters in order."""

    __slots__ = ("by_key", "turns")

    def __init__(self) -> None:
        self.turns: deque[str] = deque()
        self.by_key: dict[str, deque[T]] = {}


class FairQueue(Generic[T]):
    """Waiting items of one model; ``pop`` gives the next one by priority and key rotation."""

    __slots__ = ("_len", "_levels", "_where")

    def __init__(self) -> None:
        self._levels: dict[int, _Level[T]] = {}
        self._where: dict[int, tuple[int, str]] = {}  # id(item) -> (priority, key)
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def push(self, item: T, key: str = "", priority: int = 0) -> None:
        """Queue ``item`` for ``key`` at ``priority`` (behind that key's earlier items)."""
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = _Level()
        q = level.by_key.get(key)
        if q is None:
            q = level.by_key[key] = deque()
            level.turns.append(key)  # a key that starts waiting joins the end of the rotation
        q.append(item)
        self._where[id(item)] = (priority, key)
        self._len += 1

    def pop(self) -> T:
        """The next item: lowest priority number, the key whose turn it is; IndexError if empty."""
        if not self._levels:
            raise IndexError("pop from an empty FairQueue")
        priority = min(self._levels)
        level = self._levels[priority]
        key = level.turns.popleft()
        q = level.by_key[key]
        item = q.popleft()
        if q:
            level.turns.append(key)
        else:
            del level.by_key[key]
            if not level.turns:
                del self._levels[priority]
        del self._where[id(item)]
        self._len -= 1
        return item

    popleft = pop  # the deque spelling the pool used before

    def remove(self, item: T) -> None:
        """Take ``item`` out (its client left); ValueError when it is not queued."""
        where = self._where.pop(id(item), None)
        if where is None:
            raise ValueError("item not queued")
        priority, key = where
        level = self._levels[priority]
        q = level.by_key[key]
        q.remove(item)
        self._len -= 1
        if not q:
            del level.by_key[key]
            level.turns.remove(key)
            if not level.turns:
                del self._levels[priority]

    def depth_by_key(self) -> dict[str, int]:
        """How many items each key has waiting (all priorities)."""
        out: dict[str, int] = {}
        for level in self._levels.values():
            for key, q in level.by_key.items():
                out[key] = out.get(key, 0) + len(q)
        return out

    def __iter__(self) -> Iterator[T]:
        for p in sorted(self._levels):
            for q in self._levels[p].by_key.values():
                yield from q
