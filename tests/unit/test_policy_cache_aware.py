"""cache_aware: prefix stickiness, bounded memory, hot prefixes spread, slow replicas avoided."""

from __future__ import annotations

from collections import Counter

import pytest

from corral.router.context import RequestContext
from corral.router.engine_load import queue_length
from corral.router.instance import Instance
from corral.router.policies import cache_aware
from corral.router.prefix_tree import PrefixTree, chain
from corral.router.routable import Routable


@pytest.fixture(autouse=True)
def fresh_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_aware, "tree", PrefixTree())


def _fleet(n: int) -> Routable:
    return Routable(Instance(f"http://127.0.0.1:{9000 + i}", ("m",), state="healthy") for i in range(n))


def _ctx(system: str, *turns: str) -> RequestContext:
    messages = [{"role": "system", "content": system}]
    for i, t in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    return RequestContext("r", {"model": "m", "messages": messages}, None, None)


def _send(fleet: Routable, ctx: RequestContext) -> Instance:
    inst = cache_aware.select(fleet, ctx)
    assert inst is not None
    old = inst.outstanding
    inst.outstanding += 1
    fleet.moved(inst, old)
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
        inst.ewma_s = 0.3 if i == 0 else 0.1
    slow = fleet.members[0]
    picked = [_send(fleet, _ctx(f"system {s}", "hi")) for s in range(24)]
    assert sum(i is slow for i in picked) <= 3  # a quarter would be 6


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
