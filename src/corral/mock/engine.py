"""An engine-like scheduler for the mock: prefix cache, prefill cost, batch limit, waiting queue.

Off by default (every knob 0): the mock then answers as before. On, it behaves like vLLM where a
router can see it:

- **Prefix cache** (``--prefix-cache-tokens N``): an LRU of fixed-size token blocks
  (``--block-size``, 16 as vLLM's), each keyed by a hash chained over every token before it, so
  a block is a hit only when the whole prefix up to it matches. Tokens are the prompt's
  whitespace words (the same count ``usage`` reports). Only full blocks are cached and matched.
- **Prefill** (``--prefill-ms-per-token``): each uncached prompt token costs that much time on
  one prefill lane per process (prefill is compute-bound: requests' prefills run one after the
  other), before the first token. Cached tokens cost nothing.
- **Batch limit** (``--max-num-seqs``): at most that many requests run at once; the rest wait in
  FIFO order, as vLLM's waiting queue.
- **Metrics**: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:gpu_cache_usage_perc`` (fraction of the cache's blocks in use, 0..1) and the prefix-cache
  counters in tokens, ``vllm:prefix_cache_queries_total`` / ``vllm:prefix_cache_hits_total``.

The decode pace stays ``--itl-ms``. With ``--workers N`` each process has its own engine.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EngineConfig:
    """The engine knobs; all zero = no engine (the plain mock)."""

    prefix_cache_tokens: int = 0
    block_size: int = 16
    prefill_ms_per_token: float = 0.0
    max_num_seqs: int = 0

    @property
    def enabled(self) -> bool:
        """Whether any engine behaviour is asked for."""
        return bool(self.prefix_cache_tokens or self.prefill_ms_per_token or self.max_num_seqs)


def block_hashes(text: str, block_size: int) -> list[int]:
    """The chained hashes of the full blocks of ``text``'s tokens (whitespace words).

    Block ``i``'s hash covers every token of blocks ``0..i``: equal hashes mean equal prefixes.
    ``hash()`` of str is salted per process, which is fine: the cache lives in one process.
    """
    words = text.split()
    out: list[int] = []
    h = 0
    for i in range(0, len(words) - block_size + 1, block_size):
        h = hash((h, *words[i : i + block_size]))
        out.append(h)
    return out


class PrefixCache:
    """An LRU of token blocks, ``capacity`` tokens in all (rounded down to whole blocks)."""

    def __init__(self, capacity_tokens: int, block_size: int) -> None:
        self.block_size = block_size
        self.capacity = capacity_tokens // block_size
        self.blocks: OrderedDict[int, None] = OrderedDict()
        self.queries = 0  # prompt tokens looked up
        self.hits = 0  # of which found cached

    def match(self, hashes: list[int], prompt_tokens: int) -> int:
        """Count a lookup of a prompt; return its cached tokens (the leading run of cached blocks)."""
        self.queries += prompt_tokens
        n = 0
        for h in hashes:
            if h not in self.blocks:
                break
            self.blocks.move_to_end(h)
            n += 1
        cached = n * self.block_size
        self.hits += cached
        return cached

    def insert(self, hashes: list[int]) -> None:
        """Cache a prompt's blocks (most recent last), evicting the least recently used."""
        if not self.capacity:
            return
        blocks = self.blocks
        for h in hashes:
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)

    @property
    def usage(self) -> float:
        """Fraction of the cache's blocks in use, 0..1."""
        return len(self.blocks) / self.capacity if self.capacity else 0.0


class Engine:
    """Admission for generation requests: waiting queue, batch slots, prefix cache, prefill lane."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.cache = PrefixCache(config.prefix_cache_tokens, config.block_size)
        self.running = 0
        self.waiting: deque[asyncio.Future[None]] = deque()
        self._prefill_s = config.prefill_ms_per_token / 1000
        self._lane_free_at = 0.0  # monotonic time the prefill lane is next free

    async def serve(
        self, prompt: str, prompt_tokens: int, reply: Coroutine[Any, Any, None], abort: Callable[[], None]
    ) -> None:
        """Wait for a slot and the prefill, then run ``reply`` (the mock's answer) in the slot.

        ``abort`` is called when the client leaves before ``reply`` started (``reply`` counts
        its own outcome once it runs).
        """
        started = False
        admitted = False
        try:
            await self._slot()
            admitted = True
            hashes = block_hashes(prompt, self.config.block_size) if self.cache.capacity else []
            cached = self.cache.match(hashes, prompt_tokens) if self.cache.capacity else 0
            if self._prefill_s:
                now = time.monotonic()
                start = max(now, self._lane_free_at)
                self._lane_free_at = start + (prompt_tokens - cached) * self._prefill_s
                await asyncio.sleep(self._lane_free_at - now)
            self.cache.insert(hashes)
            started = True
            await reply
        finally:
            if not started:
                reply.close()
                abort()
            if admitted:
                self.running -= 1
                self._wake()

    async def _slot(self) -> None:
        limit = self.config.max_num_seqs
        if not limit or (self.running < limit and not self.waiting):
            self.running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        try:
            await fut  # _wake counted us as running before resolving
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.running -= 1  # handed a slot just as the client left: pass it on
                self._wake()
            else:
                self.waiting.remove(fut)
            raise

    def _wake(self) -> None:
        limit = self.config.max_num_seqs
        while self.waiting and (not limit or self.running < limit):
            fut = self.waiting.popleft()
            if not fut.done():
                self.running += 1
                fut.set_result(None)

    def prometheus(self, model: str) -> list[str]:
        """vLLM's scheduler and prefix-cache metrics (one engine per process, labelled by its model)."""
        c = self.cache
        rows = (
            ("vllm:num_requests_running", "gauge", "Requests in the running batch.", self.running),
            ("vllm:num_requests_waiting", "gauge", "Requests waiting for a batch slot.", len(self.waiting)),
            ("vllm:gpu_cache_usage_perc", "gauge", "Fraction of prefix-cache blocks in use (0-1).", c.usage),
            (
                "vllm:prefix_cache_queries_total",
                "counter",
                "Prompt tokens looked up in the prefix cache.",
                c.queries,
            ),
            ("vllm:prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.", c.hits),
        )
        lines: list[str] = []
        for name, kind, help_, value in rows:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            lines.append(f'{name}{{model_name="{model}"}} {value}')
        return lines
