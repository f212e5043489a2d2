"""An approximate prefix tree of the prompts sent to each instance (for ``cache_aware``).

A prompt is cut into blocks (each message's role and content, long contents in ``CHUNK``-char
pieces; a completion prompt in pieces) and each block is keyed by a hash chained over every
block before it, as an engine's prefix cache keys its KV blocks: equal keys mean equal prefixes,
so the set of keys is a prefix tree whose nodes are found by one dict lookup each. A node
remembers which instances were sent that prefix (most recent last).

Memory is bounded: at most ``max_blocks`` nodes, evicted least recently used first; inserting a
prompt touches its deepest block first and its first block last, so leaves go before the shared
prefixes above them (SGLang's router evicts leaves too). Instances' ids are kept, not objects, so
a re-registered instance keeps its history. Approximate on purpose: the engine may have evicted
what we remember, and we never see what other routers sent.

A block an instance was sent but has not computed yet (its request's first byte has not come
back) is marked with that request's :class:`Prefill`: a second request for the same prefix can
wait for it there (a cache hit after a short wait) instead of computing it all again beside it,
as an engine would (it does not share a prefix still in prefill).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

CHUNK = 256  # chars per block inside one long message (~64 tokens)


def chain(body: dict[str, Any]) -> tuple[list[int], list[int]]:
    """The chained block hashes of a request's prompt and the prompt chars covered up to each."""
    hashes: list[int] = []
    ends: list[int] = []
    h = 0
    covered = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages:
            if not isinstance(m, dict):
                continue
            content = m.get("content")
            if not isinstance(content, str):
                content = repr(content)  # parts, tools: stable enough to key on
            h = hash((h, m.get("role")))
            for i in range(0, max(len(content), 1), CHUNK):
                piece = content[i : i + CHUNK]
                h = hash((h, piece))
                covered += len(piece) + 1
                hashes.append(h)
                ends.append(covered)
        return hashes, ends
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        for i in range(0, len(prompt), CHUNK):
            piece = prompt[i : i + CHUNK]
            h = hash((h, piece))
            covered += len(piece)
            hashes.append(h)
            ends.append(covered)
    return hashes, ends


class Prefill:
    """One request's prompt on its way through an instance's prefill.

    ``done`` once its first byte came back (a stream) or it ended (any other answer, a failure):
    the blocks it brought are computed. Only a stream says when its prefill ended, so only a
    stream's prefill is worth waiting for (:attr:`stream`).
    """

    __slots__ = ("_waiters", "done", "stream", "wait_s")

    def __init__(self, stream: bool, wait_s: float = 2.0) -> None:
        self.done = False
        self.stream = stream
        self.wait_s = wait_s  # the longest another request waits for it
        self._waiters: list[asyncio.Future[None]] | None = None

    def finish(self) -> None:
        """Its prefill is over: wake the requests waiting for it."""
        if self.done:
            return
        self.done = True
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    async def wait(self) -> bool:
        """Wait until :meth:`finish`, at most :attr:`wait_s`; False on timeout (then finished)."""
        if self.done:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(self.wait_s):
                await fut
        except TimeoutError:
            # Whatever kept it (a lost first byte, a request gone before it was sent), nobody
            # waits for this prefill again.
            self.finish()
            return False
        return True


Owners = dict[str, "Prefill | None"]  # instance id -> its prefill in flight (None: computed)


class PrefixTree:
    """Block hash -> the ids of instances that were sent that prefix (LRU-bounded)."""

    def __init__(self, max_blocks: int = 1 << 17) -> None:
        self.max_blocks = max_blocks
        self.nodes: OrderedDict[int, Owners] = OrderedDict()

    def depth(self, hashes: list[int]) -> int:
        """How many leading blocks of ``hashes`` some instance has (0: none)."""
        nodes = self.nodes
        n = 0
        for h in hashes:
            if h not in nodes:
                break
            n += 1
        return n

    def owners(self, h: int) -> Owners:
        """The instance ids at block ``h``, least recent first (empty if unknown)."""
        return self.nodes.get(h) or {}

    def matched(self, hashes: list[int], owner: str, upto: int) -> int:
        """How many leading blocks ``owner`` has, searching the first ``upto`` (binary search).

        Sound because an instance holding block k was sent blocks 0..k too (leaves go first).
        """
        nodes = self.nodes
        lo, hi = 0, upto
        while lo < hi:
            mid = (lo + hi + 1) // 2
            node = nodes.get(hashes[mid - 1])
            if node is not None and owner in node:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def prefill(self, h: int, owner: str) -> Prefill | None:
        """The prefill in flight that brings block ``h`` to ``owner``; None when computed."""
        node = self.nodes.get(h)
        p = node.get(owner) if node is not None else None
        return p if p is not None and not p.done else None

    def insert(self, hashes: list[int], owner: str, prefill: Prefill | None = None) -> None:
        """Record that ``owner`` was sent this prompt; evict the least recently used blocks.

        Blocks new to ``owner`` are marked with ``prefill`` until it is done; blocks it already
        has keep their mark (an earlier prefill still computing them) or lose a finished one.
        """
        nodes = self.nodes
        for h in reversed(hashes):
            node = nodes.get(h)
            if node is None:
                nodes[h] = {owner: prefill}
            else:
                if owner in node:
                    had = node.pop(owner)
                    node[owner] = had if had is not None and not had.done else None
                else:
                    node[owner] = prefill
                nodes.move_to_end(h)
        while len(nodes) > self.max_blocks:
            nodes.popitem(last=False)
