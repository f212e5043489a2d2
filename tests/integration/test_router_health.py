"""Truthful health through the router, with real mocks: busy is not sick, stalls are cut, a
backend that answers /health but cannot generate is ejected, and why an instance is out shows."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from test_router_support import start_mock, start_router, stats

from support import CorralProcs, wait_until

MSG = [{"role": "user", "content": "hello"}]


def workers(router: str) -> dict[str, dict[str, Any]]:
    """The router's /workers view by URL."""
    return {w["url"]: w for w in httpx.get(router + "/workers", timeout=5).json()["workers"]}


def test_backend_400s_never_open_the_circuit(procs: CorralProcs, tmp_path: Path) -> None:
    bad = start_mock(procs, "m1", "--error-400-rate", "0.3", "--seed", "2")
    router = start_router(procs, [bad], config={"breaker": {"failures": 1}}, tmp=tmp_path)
    c = openai.OpenAI(base_url=router + "/v1", api_key="x", max_retries=0)
    outcomes = []
    for _ in range(30):
        try:
            c.chat.completions.create(model="m1", messages=MSG, max_tokens=2)  # type: ignore[arg-type]
            outcomes.append(200)
        except openai.BadRequestError as exc:
            assert exc.code == "injected_400"
            outcomes.append(400)
    assert 400 in outcomes and 200 in outcomes
    w = workers(router)[bad]
    assert w["circuit"] == "closed" and w["out_reason"] is None and w["healthy"]


def test_backend_429_is_retried_elsewhere_and_is_not_a_failure(procs: CorralProcs, tmp_path: Path) -> None:
    full = start_mock(procs, "m1", "--error-429-rate", "1")
    ok = start_mock(procs, "m1")
    router = start_router(
        procs, [full, ok], config={"policy": "round_robin", "breaker": {"failures": 1}}, tmp=tmp_path
    )
    c = openai.OpenAI(base_url=router + "/v1", api_key="x", max_retries=0)
    for _ in range(10):
        c.chat.completions.create(model="m1", messages=MSG, max_tokens=2)  # type: ignore[arg-type]
    assert stats(full)["failed"] >= 4  # round robin sent it its share; each was retried on `ok`
    assert stats(ok)["completed"] == 10
    w = workers(router)[full]
    assert w["circuit"] == "closed" and w["out_reason"] is None


async def test_slow_answers_under_load_never_open_the_circuit(procs: CorralProcs, tmp_path: Path) -> None:
    slow = start_mock(procs, "m1", "--slow-rate", "0.5", "--slow-ms", "300", "--itl-ms", "2")
    router = start_router(procs, [slow], config={"breaker": {"failures": 1}}, tmp=tmp_path)
    async with openai.AsyncOpenAI(base_url=router + "/v1", api_key="x", max_retries=0, timeout=60) as c:

        async def client(n: int) -> int:
            for _ in range(n):
                await c.chat.completions.create(model="m1", messages=MSG, max_tokens=8)  # type: ignore[arg-type]
            return n

        done = await asyncio.gather(*(client(4) for _ in range(16)))
    assert sum(done) == 64
    w = workers(router)[slow]
    assert w["circuit"] == "closed" and w["stalls_total"] == 0 and w["out_reason"] is None


def test_hung_generation_is_retried_ejected_and_kept_out_504_without_retry(
    procs: CorralProcs, tmp_path: Path
) -> None:
    # `hung` answers /health and /v1/models but never generates (vLLM's dead engine).
    hung = start_mock(procs, "m1,m2", "--hang-generation-after", "0")
    ok = start_mock(procs, "m1")
    config = {
        "policy": "round_robin",
        "timeouts": {"response_s": 1.0, "models": {"m2": {"retry_on_timeout": False, "response_s": 0.5}}},
        "outlier": {"consecutive_stalls": 2, "base_ejection_s": 0.5, "probe_timeout_s": 0.5},
    }
    router = start_router(procs, [hung, ok], config=config, tmp=tmp_path)
    c = openai.OpenAI(base_url=router + "/v1", api_key="x", max_retries=0, timeout=30)
    # m2 lives only on `hung` and may not be retried: 504 in OpenAI's shape, upstream closed.
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        c.chat.completions.create(model="m2", messages=MSG, max_tokens=2)  # type: ignore[arg-type]
    assert exc.value.status_code == 504 and exc.value.code == "upstream_timeout"
    assert 0.4 < time.monotonic() - t0 < 10
    wait_until(lambda: stats(hung)["aborted"] == 1, 10, what="the backend saw the router leave")
    # m1: requests that land on `hung` time out and are retried on `ok`; none fails.
    for _ in range(4):
        r = c.chat.completions.create(model="m1", messages=MSG, max_tokens=2)  # type: ignore[arg-type]
        assert r.choices[0].message.content
    w = workers(router)[hung]
    assert w["out_reason"] == "stalled" and w["stalls_total"] >= 2 and w["healthy"]
    text = httpx.get(router + "/metrics").text
    assert f'corral_router_instance_out{{instance="{hung}",reason="stalled"}} 1.0' in text
    assert f'corral_router_instance_out{{instance="{ok}",reason="stalled"}} 0.0' in text
    # Its generation probe keeps failing: ejected again with a longer back-off, never re-admitted.
    wait_until(lambda: workers(router)[hung]["ejections"] >= 2, 20, what="second ejection")
    assert workers(router)[hung]["out_reason"] == "stalled"
    before = stats(ok)["completed"]
    for _ in range(4):
        c.chat.completions.create(model="m1", messages=MSG, max_tokens=2)  # type: ignore[arg-type]
    assert stats(ok)["completed"] == before + 4


def test_stalled_stream_ends_with_sse_error_and_probe_readmits(procs: CorralProcs, tmp_path: Path) -> None:
    # `stally` sends 3 tokens of any longer answer, then goes silent with the connection open;
    # a 1-token answer (the re-admission probe) completes.
    stally = start_mock(procs, "m1,s", "--stall-after-tokens", "3")
    ok = start_mock(procs, "m1")
    config = {
        "policy": "round_robin",
        "timeouts": {"inter_token_s": 0.5, "response_s": 1.0},
        "outlier": {"consecutive_stalls": 2, "base_ejection_s": 0.5},
    }
    router = start_router(procs, [stally, ok], config=config, tmp=tmp_path)
    c = openai.OpenAI(base_url=router + "/v1", api_key="x", max_retries=0, timeout=30)
    got: list[str] = []
    stream = c.chat.completions.create(
        model="s", messages=MSG, max_tokens=10, stream=True, extra_body={"ignore_eos": True}
    )  # type: ignore[call-overload]
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert len(got) == 3 and "stalled" in str(exc.value)
    wait_until(lambda: stats(stally)["aborted"] == 1, 10, what="upstream closed on the stall")
    # Non-streamed m1 answers longer than 3 tokens stall there: retried on `ok`, then ejected.
    for _ in range(4):
        r = c.chat.completions.create(model="m1", messages=MSG, max_tokens=8, extra_body={"ignore_eos": True})  # type: ignore[call-overload]
        assert r.choices[0].message.content
    assert workers(router)[stally]["ejections"] >= 1
    # The probe asks for 1 token, which `stally` still generates: back in rotation.
    w = wait_until(
        lambda: (w := workers(router)[stally])["out_reason"] is None and w, 20, what="re-admitted by probe"
    )
    assert w["stalls"] == 0 and w["circuit"] == "closed"
