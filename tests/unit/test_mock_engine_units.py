"""The engine-like mock's prefix cache: chained block hashes, hits in tokens, LRU eviction."""

from __future__ import annotations

import asyncio

from corral.mock.engine import Engine, EngineConfig, PrefixCache, block_hashes


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def test_block_hashes_cover_full_blocks_and_chain_over_the_prefix() -> None:
    a = block_hashes(words(10), 4)
    assert len(a) == 2  # 10 tokens = 2 full blocks, the last 2 tokens are not cached
    b = block_hashes("x " + words(10)[2:], 4)  # first token differs
    assert a[0] != b[0] and a[1] != b[1]  # a changed prefix changes every later block
    assert block_hashes(words(8) + " other words", 4)[:2] == a


def test_prefix_cache_counts_tokens_and_evicts_least_recently_used() -> None:
    cache = PrefixCache(capacity_tokens=8, block_size=4)  # two blocks
    first = block_hashes(words(8, "a"), 4)
    assert cache.match(first, 8) == 0
    cache.insert(first)
    assert cache.match(first, 8) == 8
    assert (cache.queries, cache.hits, cache.usage) == (16, 8, 1.0)
    other = block_hashes(words(4, "b"), 4)
    cache.insert(other)  # evicts the least recently used block: a's first
    assert cache.match(first, 8) == 0  # the chain starts with an evicted block: no hit at all
    assert cache.match(other, 4) == 4


def test_max_num_seqs_queues_in_order_and_cancelled_waiter_leaves() -> None:
    async def main() -> None:
        engine = Engine(EngineConfig(max_num_seqs=1))
        gate = asyncio.Event()
        order: list[int] = []

        async def reply(i: int) -> None:
            order.append(i)
            await gate.wait()

        aborted: list[int] = []
        tasks = [
            asyncio.create_task(engine.serve("p", 1, reply(i), lambda i=i: aborted.append(i)))  # type: ignore[misc]
            for i in range(3)
        ]
        await asyncio.sleep(0.01)
        assert (engine.running, len(engine.waiting)) == (1, 2)
        tasks[1].cancel()
        await asyncio.sleep(0.01)
        assert aborted == [1] and len(engine.waiting) == 1
        gate.set()
        await asyncio.gather(tasks[0], tasks[2])
        assert order == [0, 2] and engine.running == 0 and not engine.waiting

    asyncio.run(main())
