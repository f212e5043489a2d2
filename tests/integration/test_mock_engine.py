"""The engine-like mock as a router meets it: prefix-cache counters, prefill cost, waiting queue."""

from __future__ import annotations

import re
import threading
import time

import httpx
import openai

from support import CorralProcs, free_port, wait_http, wait_until


def start(procs: CorralProcs, *args: str) -> str:
    port = free_port()
    procs.start("mock", "--port", str(port), "--models", "m", *args)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health", timeout=30)
    return base


def metrics(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return {
        m.group(1): float(m.group(2)) for m in re.finditer(r"^(vllm:[a-z_]+)\{[^}]*\} (\S+)$", text, re.M)
    }


def prompt(n: int) -> str:
    return " ".join(f"t{i}" for i in range(n))


def test_off_by_default_no_engine_metrics(procs: CorralProcs) -> None:
    base = start(procs)
    m = metrics(base)
    assert "vllm:num_requests_running" in m and "vllm:num_requests_waiting" not in m


def test_prefix_cache_hits_second_request_and_prefill_cost_only_uncached(procs: CorralProcs) -> None:
    base = start(procs, "--prefix-cache-tokens", "4096", "--block-size", "16", "--prefill-ms-per-token", "2")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
    messages = [{"role": "system", "content": prompt(299)}, {"role": "user", "content": "hello"}]

    def ttft() -> float:
        t0 = time.perf_counter()
        stream = client.chat.completions.create(model="m", messages=messages, stream=True)  # type: ignore[arg-type]
        next(iter(stream))
        elapsed = time.perf_counter() - t0
        stream.close()
        return elapsed

    cold = ttft()  # 302 tokens ("system" + 299 + "user hello"... words) x 2 ms: about 0.6 s
    warm = ttft()  # 288 cached: 14 uncached tokens x 2 ms
    assert cold >= 0.5, cold
    assert warm < cold / 2, (cold, warm)
    m = wait_until(lambda: (x := metrics(base)) and x["vllm:num_requests_running"] == 0 and x, what="idle")
    tokens = 1 + 299 + 2  # "system", the words, "user hello"
    assert m["vllm:prefix_cache_queries_total"] == 2 * tokens
    assert m["vllm:prefix_cache_hits_total"] == (tokens // 16) * 16
    assert 0 < m["vllm:gpu_cache_usage_perc"] <= 1


def test_max_num_seqs_puts_the_rest_in_the_waiting_queue(procs: CorralProcs) -> None:
    base = start(procs, "--max-num-seqs", "2", "--itl-ms", "50", "--max-tokens", "20")
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 20,
        "ignore_eos": True,
    }
    results: list[int] = []

    def send() -> None:
        results.append(httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30).status_code)

    threads = [threading.Thread(target=send) for _ in range(5)]
    for t in threads:
        t.start()
    m = wait_until(
        lambda: (x := metrics(base)) and x["vllm:num_requests_waiting"] == 3 and x,
        timeout=10,
        what="3 waiting",
    )
    assert m["vllm:num_requests_running"] == 2
    for t in threads:
        t.join(30)
    assert results == [200] * 5
    m = metrics(base)
    assert (m["vllm:num_requests_running"], m["vllm:num_requests_waiting"]) == (0, 0)
    assert httpx.get(f"{base}/stats").json()["completed"] == 5
