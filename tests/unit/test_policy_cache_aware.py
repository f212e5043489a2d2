"""cache_aware: prefix stickiness, bounded memory, hot prefixes spread, slow replicas avoided."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from corral.router.context import RequestContext
from corral.router.engine_load import queue_length
from corral.router.instance import Instance
from corral.router.policies import cache_aware
from corral.router.prefix_tree import Prefill, PrefixTree, chain
from corral.router.routable import Routable


@pytest.fixture(autouse=True)
def fresh_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_aware, "tree", PrefixTree())


def _fleet(n: int) -> Routable:
    return Routable(Instance(f"http://127.0.0.1:{9000 + i}", ("m",), state="healthy") for i in range(n))


def _ctx(system: str, *turns: str, stream: bool = False) -> RequestContext:
    messages = [{"role": "system", "content": system}]
    for i, t in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    return RequestContext("r", {"model": "m", "messages": messages, "stream": stream}, None, None)


def _send(fleet: Routable, ctx: RequestContext, prefilled: bool = True) -> Instance:
    """Route ``ctx`` and count it in flight; ``prefilled``: its prompt is computed at once (as
    when its first byte came back), else its prefill stays in flight."""
    inst = cache_aware.select(fleet, ctx)
    assert inst is not None
    old = inst.outstanding
    inst.outstanding += 1
    fleet.moved(inst, old)
    if prefilled:
        ctx.prefill.finish()
    return inst


def _done(fleet: Routable, inst: Instance) -> None:
    old = inst.outstanding
    inst.outstanding -= 1
    fleet.moved(inst, old)


def test_a_conversation_stays_where_its_history_is() -> None:
    fleet = _fleet(4)
    homes = {}
    for s in range(8):  # eight conversations, one request each in flight
        homes[s] = _send(fleet, _ctx(f"system {s} " * 50, f"question {s} " * 30))
    assert sorted(Counter(i.url for i in homes.values()).values()) == [2, 2, 2, 2]  # spread by load
    for inst in homes.values():
        _done(fleet, inst)
    for s in range(8):  # the next turn of each goes home
        later = _ctx(f"system {s} " * 50, f"question {s} " * 30, f"answer {s} " * 20, "and then?")
        inst = _send(fleet, later)
        assert inst is homes[s]
        _done(fleet, inst)


def test_a_hot_system_prompt_does_not_pile_onto_one_instance() -> None:
    fleet = _fleet(4)
    hot = "the same long system prompt " * 200
    counts = Counter(_send(fleet, _ctx(hot, f"user {s} says " * 10)).url for s in range(40))
    assert max(counts.values()) <= 12  # 40 concurrent conversations, 10 each when even


def test_a_slow_instance_gets_less_new_work() -> None:
    fleet = _fleet(4)
    for i, inst in enumerate(fleet.members):
        inst.observe(0.3 if i == 0 else 0.1)
    slow = fleet.members[0]
    picked = [_send(fleet, _ctx(f"system {s}", "hi")) for s in range(24)]
    assert sum(i is slow for i in picked) <= 3  # a quarter would be 6


def test_of_two_instances_the_slow_one_gets_less_new_work() -> None:
    fleet = _fleet(2)
    fast, slow = fleet.members
    fast.observe(0.1)
    slow.observe(0.3)
    picked = [_send(fleet, _ctx(f"system {s}", "hi")) for s in range(12)]
    assert sum(i is slow for i in picked) <= 3  # half would be 6


def test_a_new_conversation_goes_to_its_system_prompt_unless_that_is_far_busier() -> None:
    fleet = _fleet(4)
    system = "a long shared system prompt " * 100
    holder = _send(fleet, _ctx(system, "first user"))
    assert _send(fleet, _ctx(system, "second user")) is holder  # load 1 vs 0: the cache wins
    for _ in range(4):  # five in flight there, none elsewhere: past the load gap
        holder.outstanding += 1
        fleet.moved(holder, holder.outstanding - 1)
    assert _send(fleet, _ctx(system, "third user")) is not holder


def test_a_prefix_still_in_a_non_streamed_prefill_counts_as_nothing() -> None:
    fleet = _fleet(4)  # cold start, plain answers: nothing says when their prefill ends
    system = "the same system prompt " * 100
    ctxs = [_ctx(system, f"user {k}") for k in range(8)]
    firsts = [_send(fleet, c, prefilled=False) for c in ctxs]
    assert sorted(Counter(i.url for i in firsts).values()) == [2, 2, 2, 2]  # spread by load
    assert all(c.hold is None for c in ctxs)
    ctxs[0].prefill.finish()  # its answer came back: the prompt is in that engine's cache now
    assert _send(fleet, _ctx(system, "user 8")) is firsts[0]  # 3 in flight vs 2: the cache counts


def test_a_cold_burst_of_streams_groups_by_system_prompt_and_waits_for_its_prefill() -> None:
    fleet = _fleet(4)
    systems = [f"system prompt number {k} " * 100 for k in range(4)]
    ctxs = [_ctx(systems[n % 4], f"user {n}", stream=True) for n in range(12)]
    picked = [_send(fleet, c, prefilled=False) for c in ctxs]
    for k in range(4):  # each prompt on one instance, every instance one prompt
        assert len({picked[n] for n in range(k, 12, 4)}) == 1
    assert len(set(picked)) == 4
    for n in range(4):  # the first of each computes it; the others wait for that prefill
        assert ctxs[n].hold is None
        assert ctxs[n + 4].hold is ctxs[n].prefill and ctxs[n + 8].hold is ctxs[n].prefill
    ctxs[0].prefill.finish()
    later = _ctx(systems[0], "user 12", stream=True)
    assert _send(fleet, later, prefilled=False) is picked[0] and later.hold is None  # computed now


async def test_a_wait_for_a_prefill_ends_at_its_first_byte_or_at_hold_s() -> None:
    done = Prefill(stream=True, wait_s=5)
    waiter = asyncio.ensure_future(done.wait())
    await asyncio.sleep(0)
    done.finish()
    assert await asyncio.wait_for(waiter, 1) is True
    stuck = Prefill(stream=True, wait_s=0.05)
    assert await stuck.wait() is False  # sent anyway
    assert stuck.done  # and nobody waits for it again
    assert await done.wait() is True  # already over: no wait


def test_a_conversation_leaves_home_only_when_home_is_overloaded() -> None:
    fleet = _fleet(2)
    a, b = fleet.members
    history = ("sys " * 50, "question " * 60, "answer " * 60)
    home = _send(fleet, _ctx(*history))
    _done(fleet, home)
    other = b if home is a else a
    for _ in range(7):  # home has 7 more in flight than the other, within 2 x 0 + 8
        _send(fleet, _ctx(f"filler {_} " * 40, "x"))  # new conversations: may land anywhere
    while home.outstanding < 8:
        home.outstanding += 1
        fleet.moved(home, home.outstanding - 1)
    while other.outstanding:
        other.outstanding -= 1
        fleet.moved(other, other.outstanding + 1)
    assert _send(fleet, _ctx(*history, "next?")) is home  # 8 <= 2 x 0 + 8: stays
    _done(fleet, home)
    home.outstanding += 2
    fleet.moved(home, home.outstanding - 2)
    assert _send(fleet, _ctx(*history, "next?")) is other  # 9 > 8: moves


def test_configure_sets_the_constants_and_the_tree_size() -> None:
    from corral.config.cache_aware import CacheAwareSettings

    old = cache_aware.params
    try:
        cache_aware.configure(CacheAwareSettings(load_gap=0, tree_blocks=2048))
        assert cache_aware.params.load_gap == 0 and cache_aware.tree.max_blocks == 2048
        fleet = _fleet(2)
        system = "shared " * 300
        holder = _send(fleet, _ctx(system, "one"))
        assert _send(fleet, _ctx(system, "two")) is not holder  # no gap: load decides
    finally:
        cache_aware.configure(old)


def test_engine_load_counts_and_corrects_by_our_own_sends() -> None:
    inst = Instance("http://a:1", ("m",), state="healthy")
    inst.outstanding = 2
    assert inst.load == 2  # no engine figure yet: our own count
    inst.engine_load, inst.engine_base = 7.0, 2  # the engine had 7 queued when we had 2 in flight
    inst.outstanding = 3
    assert inst.load == 8


def test_tree_memory_is_bounded_and_leaves_go_first() -> None:
    tree = PrefixTree(max_blocks=50)
    shared = [{"role": "system", "content": "s" * 1000}]
    first, _ = chain({"messages": shared})
    for k in range(40):
        hashes, _ = chain({"messages": [*shared, {"role": "user", "content": f"q{k}" * 200}]})
        tree.insert(hashes, f"i{k % 4}")
    assert len(tree.nodes) <= 50
    assert tree.depth(first) == len(first)  # the shared prefix survived, leaves were evicted


def test_queue_length_reads_vllm_sglang_and_llamacpp() -> None:
    vllm = (
        "# HELP vllm:num_requests_running x\n"
        'vllm:num_requests_running{model_name="m"} 3.0\n'
        'vllm:num_requests_waiting{model_name="m"} 2.0\n'
        "vllm:prefix_cache_hits_total 9\n"
    )
    assert queue_length(vllm) == 5.0
    assert queue_length("sglang:num_running_reqs 1\nsglang:num_queue_reqs 4\n") == 5.0
    assert queue_length("llamacpp:requests_processing 1\nllamacpp:requests_deferred 0\n") == 1.0
    assert queue_length("corral_mock_requests_total 4\n") is None
