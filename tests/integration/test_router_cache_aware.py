"""cache_aware through real processes: the engines' own queues steer traffic, prefixes stick."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import httpx
import openai
from test_router_support import start_mock, start_router

from support import CorralProcs, wait_until

ENGINE = ("--prefix-cache-tokens", "4096", "--max-num-seqs", "1", "--itl-ms", "20")
# Tests that count what the engines served: without the router's own speed probe.
NO_PROBE = {"policy": "cache_aware", "cache_aware": {"speed_probe": False}}


def _engine_load(router: str, worker: str) -> float | None:
    for w in httpx.get(f"{router}/workers", timeout=5).json()["workers"]:
        if w["url"] == worker:
            return w["engine_load"]  # type: ignore[no-any-return]
    return None


def _hits(mock: str) -> float:
    m = re.search(r"^vllm:prefix_cache_hits_total\{[^}]*\} (\S+)$", httpx.get(f"{mock}/metrics").text, re.M)
    assert m is not None
    return float(m.group(1))


def test_load_from_outside_the_router_steers_new_work_away(procs: CorralProcs, tmp_path: Path) -> None:
    a, b = start_mock(procs, "m", *ENGINE), start_mock(procs, "m", *ENGINE)
    config = {**NO_PROBE, "engine_metrics_interval_s": 0.2}
    router = start_router(procs, [a, b], config=config, tmp=tmp_path)
    # Another client keeps `a` busy (one running, two waiting): only a's /metrics can tell.
    long = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 150,
        "ignore_eos": True,
    }
    kw = {"json": long, "timeout": 60}
    busy = [
        threading.Thread(target=httpx.post, args=(f"{a}/v1/chat/completions",), kwargs=kw) for _ in range(3)
    ]
    for t in busy:
        t.start()
    try:
        wait_until(lambda: (_engine_load(router, a) or 0) >= 3, timeout=20, what="router reads a's queue")
        for k in range(4):
            body = {
                "model": "m",
                "messages": [{"role": "user", "content": f"new conversation {k}"}],
                "max_tokens": 2,
            }
            r = httpx.post(f"{router}/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 200
        workers = httpx.get(f"{router}/workers", timeout=5).json()
        assert httpx.get(f"{b}/stats").json()["completed"] == 4, json.dumps(workers)
        assert httpx.get(f"{a}/stats").json()["total"] == 3  # only the outside client's
    finally:
        for t in busy:
            t.join(60)


def test_next_turn_goes_where_its_prefix_is_cached(procs: CorralProcs, tmp_path: Path) -> None:
    mocks = [start_mock(procs, "m", "--prefix-cache-tokens", "100000") for _ in range(3)]
    router = start_router(procs, mocks, config={"policy": "cache_aware"}, tmp=tmp_path)
    system = "you answer questions about llamas " * 40
    for conv in range(6):
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"conversation {conv} " * 50},
        ]
        for _ in range(3):
            r = httpx.post(
                f"{router}/v1/chat/completions", json={"model": "m", "messages": messages}, timeout=30
            )
            assert r.status_code == 200
            messages += [r.json()["choices"][0]["message"], {"role": "user", "content": "go on " * 20}]
    queries = hits = 0.0
    for m in mocks:
        text = httpx.get(f"{m}/metrics").text
        queries += float(re.search(r"^vllm:prefix_cache_queries_total\{[^}]*\} (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
        hits += _hits(m)
    # Turns 2 and 3 of every conversation find their whole history: well over half the tokens.
    assert hits / queries > 0.6, (hits, queries)


def _counter(mock: str, name: str) -> float:
    m = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", httpx.get(f"{mock}/metrics").text, re.M)
    assert m is not None
    return float(m.group(1))


def test_a_cold_burst_of_streams_waits_for_the_shared_prefill(procs: CorralProcs, tmp_path: Path) -> None:
    # Two engines that do not share a prefix still in prefill (as vLLM's cache): 0.5 ms per
    # uncached prompt token on one prefill lane each.
    engine = ("--prefix-cache-tokens", "100000", "--prefill-ms-per-token", "0.5")
    mocks = [start_mock(procs, "m", *engine) for _ in range(2)]
    router = start_router(procs, mocks, config=NO_PROBE, tmp=tmp_path)
    system = " ".join(f"rule{k}" for k in range(400))  # 400 tokens, 200 ms to compute

    async def ask(client: openai.AsyncOpenAI, n: int) -> str:
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": f"question {n}"}],
            max_tokens=2,
            stream=True,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def burst() -> list[str]:
        async with openai.AsyncOpenAI(base_url=router + "/v1", api_key="x", max_retries=0) as client:
            return await asyncio.gather(*(ask(client, n) for n in range(4)))

    answers = asyncio.run(burst())
    assert all(answers)
    # One engine computed the system prompt once; the three others waited for that prefill and
    # found it cached (without the wait each would have computed all of it again beside it).
    served = [_counter(m, "vllm:prefix_cache_queries_total") for m in mocks]
    hits = sum(_counter(m, "vllm:prefix_cache_hits_total") for m in mocks)
    assert sorted(served)[0] == 0, served  # one prompt, so one engine
    assert hits >= 3 * 400, (hits, served)
    assert _counter(router, "corral_router_prefill_waits_total") == 3


def _floors(router: str) -> dict[str, float]:
    return {w["url"]: w["ttfb_floor_ms"] for w in httpx.get(f"{router}/workers", timeout=5).json()["workers"]}


def test_a_new_instance_is_timed_before_any_request(procs: CorralProcs, tmp_path: Path) -> None:
    fast = start_mock(procs, "m", "--ttft-ms", "2")
    slow = start_mock(procs, "m", "--ttft-ms", "60")  # 30x slower to its first token
    router = start_router(procs, [fast, slow], config={"policy": "cache_aware"}, tmp=tmp_path)
    wait_until(lambda: all(_floors(router).values()), timeout=20, what="both instances timed")
    floors = _floors(router)
    assert floors[slow] >= 60 and floors[fast] < floors[slow], floors
    # The probe is the router's own: no client request was counted.
    assert "corral_router_requests_total{" not in httpx.get(f"{router}/metrics").text


def test_a_slow_first_answer_does_not_keep_an_instance_out(procs: CorralProcs, tmp_path: Path) -> None:
    fast = start_mock(procs, "m", "--ttft-ms", "2")
    warming = start_mock(procs, "m", "--ttft-ms", "2", "--first-ms", "500")  # its first answer: a warm-up
    config = {"policy": "cache_aware", "cache_aware": {"reprobe_s": 1}}
    router = start_router(procs, [fast, warming], config=config, tmp=tmp_path)
    highest = 0.0

    def settled() -> bool:
        nonlocal highest
        floors = _floors(router)
        highest = max(highest, floors[warming])
        return 0 < floors[warming] < 100 and floors[fast] > 0

    # Timed at first during its warm-up (>= 500 ms: it looks slow and gets no traffic); timed
    # again while it looks slow and idle, it comes back to its real speed with no client request.
    wait_until(settled, timeout=30, what="the warmed-up instance re-timed", interval=0.05)
    assert highest >= 500
