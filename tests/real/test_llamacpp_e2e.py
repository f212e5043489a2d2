"""Gemma 3 270M on two llama.cpp replicas, supervised and routed by corral, driven by the openai SDK.

One fleet (``examples/llamacpp.toml`` on free ports) serves the whole module; the tests run in
file order and the last one takes it down. Answers are kept to a few tokens so the module runs in
a couple of minutes on two shared cores.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time

import httpx
import psutil
import pytest
from llamacpp_fleet import ALIAS, MOCK, Fleet
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from corral.presets.llamacpp import LlamaCppPreset
from support import wait_until

# Loading two replicas and SIGKILL recovery take longer than the suite's default 120 s.
pytestmark = pytest.mark.timeout(600)

MAX_TOKENS = 8  # greedy (temperature 0) so answers are the same each run, never empty
PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name one colour."}]


def client(fleet: Fleet) -> OpenAI:
    # No SDK retries: every error the router lets through must show up here.
    return OpenAI(base_url=f"{fleet.router}/v1", api_key="unused", max_retries=0, timeout=120)


def in_flight(fleet: Fleet) -> dict[str, int]:
    """The router's in-flight gauge per instance URL."""
    pat = re.compile(r'^corral_router_in_flight\{instance="([^"]+)"\} ([0-9.e+]+)$', re.MULTILINE)
    return {m.group(1): int(float(m.group(2))) for m in pat.finditer(fleet.metrics())}


def test_fleet_is_up_with_both_replicas_healthy(fleet: Fleet) -> None:
    status = fleet.status()
    for name in ("registry", "router", "gemma-0", "gemma-1", "chat-0"):
        assert status[name]["state"] == "healthy", status[name]
    for i in range(2):
        info = fleet.sitter_info(i)
        assert info["state"] == "healthy"
        assert "llama" in " ".join(info["argv"])  # type: ignore[arg-type]


def test_health_path_and_max_concurrency_flow_to_the_router(fleet: Fleet) -> None:
    """Config -> `corral sit --health-path/--max-concurrency` -> registry metadata -> router."""
    for i in range(2):
        info = fleet.sitter_info(i)
        assert str(info["health_url"]).endswith("/v1/models")
        assert info["max_concurrency"] == 1
    params = {"model": ALIAS, "kind": "backend"}
    docs = httpx.get(f"{fleet.registry}/v1/instances", params=params, timeout=5).json()["data"]
    backends = {d["url"]: d for d in docs}
    workers = httpx.get(f"{fleet.router}/workers", timeout=5).json()["workers"]
    gemma = {w["url"]: w for w in workers if ALIAS in w["models"]}
    assert set(gemma) == set(backends)
    assert all(w["max_concurrency"] == 1 and w["healthy"] for w in gemma.values())


def test_models_are_listed(fleet: Fleet) -> None:
    ids = {m.id for m in client(fleet).models.list().data}
    assert {ALIAS, MOCK} <= ids


def test_chat_completion(fleet: Fleet) -> None:
    r = client(fleet).chat.completions.create(
        model=ALIAS, messages=PROMPT, max_tokens=MAX_TOKENS, temperature=0
    )
    assert r.choices[0].message.content
    assert r.usage is not None and r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= MAX_TOKENS
    assert re.search(
        r'^corral_router_completion_tokens_total\{model="gemma-3-270m"\} [1-9]', fleet.metrics(), re.M
    )
    mock = client(fleet).chat.completions.create(
        model=MOCK, messages=PROMPT, max_tokens=MAX_TOKENS, temperature=0
    )
    assert mock.choices[0].message.content


def test_streamed_chat_completion(fleet: Fleet) -> None:
    stream = client(fleet).chat.completions.create(
        model=ALIAS,
        messages=PROMPT,
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text.strip() and finish in ("stop", "length") and chunks >= 2
    if LlamaCppPreset.native():
        assert usage is not None and usage.completion_tokens > 0
    else:
        # llama-cpp-python's server (0.3.x) ignores stream_options: it sends no usage chunk.
        # The non-streamed usage is checked above; llama-server sends it (checked when installed).
        assert usage is None or usage.completion_tokens > 0


async def test_concurrent_requests_spread_over_both_replicas(fleet: Fleet) -> None:
    before = fleet.requests_by_instance()
    peak: dict[str, int] = {}
    done = asyncio.Event()

    async def sample() -> None:  # the router never has more than max_concurrency on a replica
        async with httpx.AsyncClient(timeout=5) as http:
            while not done.is_set():
                text = (await http.get(f"{fleet.router}/metrics")).text
                for url, n in re.findall(
                    r'^corral_router_in_flight\{instance="([^"]+)"\} ([0-9.]+)$', text, re.M
                ):
                    peak[url] = max(peak.get(url, 0), int(float(n)))
                await asyncio.sleep(0.05)

    aclient = AsyncOpenAI(base_url=f"{fleet.router}/v1", api_key="unused", max_retries=0, timeout=120)
    sampler = asyncio.create_task(sample())
    try:
        answers = await asyncio.gather(
            *(
                aclient.chat.completions.create(
                    model=ALIAS, messages=PROMPT, max_tokens=MAX_TOKENS, temperature=0
                )
                for _ in range(6)
            )
        )
    finally:
        done.set()
        await sampler
        await aclient.close()
    assert all(a.choices[0].message.content for a in answers)
    after = fleet.requests_by_instance()
    served = {
        url: after.get(url, 0) - before.get(url, 0) for url in (fleet.backend_url(0), fleet.backend_url(1))
    }
    assert sum(served.values()) == 6 and all(n >= 1 for n in served.values()), served
    assert all(peak.get(fleet.backend_url(i), 0) <= 1 for i in range(2)), peak


def test_sigkill_of_one_replica_under_load_loses_no_request(fleet: Fleet) -> None:
    """4 clients keep both replicas busy; replica 0's llama.cpp is SIGKILLed mid-request; the
    router retries on replica 1, the sitter restarts replica 0, the router takes it back."""
    old = fleet.sitter_info(0)
    old_pid, old_restarts = int(old["pid"]), int(old["restarts"])  # type: ignore[call-overload]
    url0 = fleet.backend_url(0)
    ok, errors, stop, threads = _load(client(fleet), 4)
    try:
        wait_until(lambda: ok[0] >= 2, 60, what="load flowing")
        wait_until(lambda: in_flight(fleet).get(url0) == 1, 30, interval=0.01, what="a request on replica 0")
        os.kill(old_pid, signal.SIGKILL)
        killed_at, ok_at_kill = time.monotonic(), ok[0]

        def back() -> bool:
            info = fleet.sitter_info(0)
            return info["state"] == "healthy" and info["pid"] not in (None, old_pid)

        wait_until(back, 120, interval=0.2, what="the sitter to bring replica 0 back")
        recovered_s = time.monotonic() - killed_at
        wait_until(lambda: url0 in _healthy_instances(fleet), 30, what="the router to take replica 0 back")
        served0 = fleet.requests_by_instance().get(url0, 0)
        wait_until(
            lambda: fleet.requests_by_instance().get(url0, 0) > served0, 60, what="traffic on replica 0 again"
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=150)
    assert errors == [], errors
    assert ok[0] > ok_at_kill
    info = fleet.sitter_info(0)
    assert int(info["restarts"]) == old_restarts + 1  # type: ignore[call-overload]
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
    assert fleet.status()["gemma-0"]["state"] == "healthy"
    print(f"replica 0 healthy again {recovered_s:.1f}s after SIGKILL; {ok[0]} requests, 0 errors")


def test_rolling_restart_under_load_loses_no_request(fleet: Fleet) -> None:
    """`corral restart gemma --rolling` while 4 clients keep both llama.cpp replicas busy: each
    replica is drained, restarted and taken back before the next; no request fails."""
    before = {i: fleet.sitter_info(i)["pid"] for i in range(2)}
    ok, errors, stop, threads = _load(client(fleet), 4)
    try:
        wait_until(lambda: ok[0] >= 2, 60, what="load flowing")
        t0 = time.monotonic()
        out = fleet.corral("restart", "gemma", "--rolling", timeout=600)
        took = time.monotonic() - t0
        at_end = ok[0]
        wait_until(lambda: ok[0] > at_end, 60, what="load flowing after the rolling restart")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=150)
    assert out.returncode == 0, out.stdout + out.stderr
    assert errors == [], errors
    after = {i: fleet.sitter_info(i)["pid"] for i in range(2)}
    assert all(after[i] not in (None, before[i]) for i in range(2)), (before, after)
    print(f"rolling restart of 2 llama.cpp replicas under load: {took:.1f}s, {ok[0]} requests, 0 errors")


def _load(sync: OpenAI, clients: int) -> tuple[list[int], list[str], threading.Event, list[threading.Thread]]:
    """``clients`` threads sending chat requests until the event is set: (ok count, errors, the
    event, the threads)."""
    ok, errors = [0], []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                r = sync.chat.completions.create(
                    model=ALIAS, messages=PROMPT, max_tokens=MAX_TOKENS, temperature=0
                )
                assert r.choices[0].message.content
                ok[0] += 1
            except Exception as exc:  # counted and reported: the tests assert there are none
                errors.append(repr(exc))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return ok, errors, stop, threads


def _healthy_instances(fleet: Fleet) -> set[str]:
    pat = re.compile(r'^corral_router_instance_healthy\{instance="([^"]+)"\} 1', re.MULTILINE)
    return set(pat.findall(fleet.metrics()))


def test_down_leaves_no_process(fleet: Fleet) -> None:
    pids = [int(s["pid"]) for s in fleet.status().values() if s.get("pid")]  # type: ignore[call-overload]
    pids += [int(fleet.sitter_info(i)["pid"]) for i in range(2)]  # type: ignore[call-overload]
    assert len(fleet.processes()) >= len(pids)
    out = fleet.down()
    assert out.returncode == 0, out.stdout + out.stderr
    survivors = [p for p in fleet.processes()]
    assert survivors == [], [(p.pid, p.info["cmdline"]) for p in survivors]
    alive = [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
    assert fleet.status() == {}
