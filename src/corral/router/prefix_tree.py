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
"""

from __future__ import annotations

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


class PrefixTree:
    """Block hash -> the ids of instances that were sent that prefix (LRU-bounded)."""

    def __init__(self, max_blocks: int = 1 << 17) -> None:
        self.max_blocks = max_blocks
        self.nodes: OrderedDict[int, dict[str, None]] = OrderedDict()

    def depth(self, hashes: list[int]) -> int:
        """How many leading blocks of ``hashes`` some instance has (0: none)."""
        nodes = self.nodes
        n = 0
        for h in hashes:
            if h not in nodes:
                break
            n += 1
        return n

    def owners(self, h: int) -> dict[str, None]:
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

    def insert(self, hashes: list[int], owner: str) -> None:
        """Record that ``owner`` was sent this prompt; evict the least recently used blocks."""
        nodes = self.nodes
        for h in reversed(hashes):
            node = nodes.get(h)
            if node is None:
                nodes[h] = {owner: None}
            else:
                node.pop(owner, None)
                node[owner] = None
                nodes.move_to_end(h)
        while len(nodes) > self.max_blocks:
            nodes.popitem(last=False)
