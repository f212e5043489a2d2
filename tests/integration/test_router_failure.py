"""The router under failure: dead backends, cut streams, clients that leave, cancel."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import httpx
import openai
import pytest
from test_router_support import start_mock, start_router, stats

from support import CorralProcs, wait_until

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hello"}]}


def _mock_pid(procs: CorralProcs, url: str) -> int:
    port = url.rsplit(":", 1)[1]
    for p in procs.procs:
        args = p.args if isinstance(p.args, list) else []
        if "mock" in args and port in args:
            return p.pid
    raise AssertionError(f"no mock process for {url}")


def _sigkill(procs: CorralProcs, url: str) -> None:
    os.killpg(_mock_pid(procs, url), signal.SIGKILL)


@pytest.mark.slow
async def test_sigkill_one_of_two_backends_under_load_no_client_errors(procs: CorralProcs) -> None:
    a = start_mock(procs, "m1", "--ttft-ms", "20", "--itl-ms", "5")
    b = start_mock(procs, "m1", "--ttft-ms", "20", "--itl-ms", "5")
    router = start_router(procs, [a, b])
    c = openai.AsyncOpenAI(base_url=router + "/v1", api_key="x", max_retries=0, timeout=60)

    async def one(i: int) -> str:
        await asyncio.sleep(i * 0.002)  # spread arrivals so the kill lands mid-load
        r = await c.chat.completions.create(**CHAT, max_tokens=20)  # type: ignore[call-overload]
        return str(r.choices[0].message.content)

    async with c:
        load = asyncio.gather(*(one(i) for i in range(300)), return_exceptions=True)
        task = asyncio.ensure_future(load)
        async with httpx.AsyncClient(timeout=30) as h:  # the mock is busy: a slow accept is no error
            deadline = time.monotonic() + 30
            while (await h.get(a + "/stats")).json()["total"] < 40 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        _sigkill(procs, a)
        results = await task
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} client errors, first: {errors[:1]!r}"
    assert all(results)

    # The killed backend comes back on its port: re-admitted by probe, not by client traffic.
    port = a.rsplit(":", 1)[1]
    procs.start("mock", "--port", port, "--models", "m1")
    t0 = time.monotonic()
    wait_until(lambda: httpx.get(a + "/v1/models").status_code == 200, 30, what="mock back")
    up = time.monotonic()
    wait_until(lambda: httpx.get(router + "/health").json()["healthy"] == 2, 15, what="re-admitted")
    assert time.monotonic() - up < 5.0, "re-admission took too long"
    assert t0 <= up


def test_mid_stream_backend_death_ends_with_sse_error_event(procs: CorralProcs) -> None:
    a = start_mock(procs, "m1", "--ttft-ms", "0", "--itl-ms", "30")
    router = start_router(procs, [a])
    body = {**CHAT, "max_tokens": 500, "stream": True}
    lines: list[str] = []
    with httpx.stream("POST", router + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
            if len([x for x in lines if x.startswith("data:")]) == 3:
                _sigkill(procs, a)
    data = [x for x in lines if x.startswith("data:")]
    last = json.loads(data[-1][5:])
    assert "error" in last and "mid-stream" in last["error"]["message"]


def test_503_is_retried_elsewhere_500_is_passed_through(procs: CorralProcs) -> None:
    bad = start_mock(procs, "m1", "--fail-rate", "1.0")  # answers 500 or 503 at random
    good = start_mock(procs, "m1")
    router = start_router(procs, [bad, good], "--policy", "round_robin")
    c = openai.OpenAI(base_url=router + "/v1", api_key="x", max_retries=0)
    statuses = []
    for _ in range(20):
        try:
            c.chat.completions.create(**CHAT, max_tokens=2)  # type: ignore[call-overload]
            statuses.append(200)
        except openai.APIStatusError as exc:
            statuses.append(exc.status_code)
    assert set(statuses) <= {200, 500}, statuses  # a 503 is never what the client sees
    assert stats(good)["completed"] == statuses.count(200)
    assert 'corral_router_retries_total{model="m1"}' in httpx.get(router + "/metrics").text


def test_no_healthy_instance_is_503(procs: CorralProcs) -> None:
    a = start_mock(procs, "m1")
    router = start_router(procs, [a])
    _sigkill(procs, a)
    c = openai.OpenAI(base_url=router + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as exc:
        c.chat.completions.create(**CHAT, max_tokens=2)  # type: ignore[call-overload]
    assert exc.value.status_code == 503


def _aborted_and_idle(url: str, n: int) -> bool:
    s = stats(url)
    return bool(s["aborted"] >= n and s["in_flight"] == 0)


def test_client_disconnect_stops_backend_mid_stream_before_first_token_and_non_streaming(
    procs: CorralProcs,
) -> None:
    slow = start_mock(procs, "m1", "--ttft-ms", "0", "--itl-ms", "50")
    late = start_mock(procs, "m2", "--ttft-ms", "20000")
    router = start_router(procs, [slow, late])
    url = router + "/v1/chat/completions"
    # Mid-stream: read two events, then leave.
    with httpx.stream("POST", url, json={**CHAT, "max_tokens": 1000, "stream": True}, timeout=30) as r:
        it = r.iter_lines()
        while sum(1 for x in [next(it)] if x.startswith("data:")) == 0:
            pass
    wait_until(lambda: _aborted_and_idle(slow, 1), 10, what="mid-stream abort reaches the backend")
    # Before the first token, streaming and not.
    late_body = {**CHAT, "model": "m2", "max_tokens": 5}
    for stream in (True, False):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json={**late_body, "stream": stream}, timeout=httpx.Timeout(30, read=0.5))
    wait_until(lambda: _aborted_and_idle(late, 2), 10, what="early aborts reach the backend")
    assert httpx.get(router + "/health").json()["in_flight"] == 0


def test_cancel_aborts_a_stream_and_a_pending_request(procs: CorralProcs) -> None:
    a = start_mock(procs, "m1", "--ttft-ms", "0", "--itl-ms", "50")
    b = start_mock(procs, "m2", "--ttft-ms", "20000")
    router = start_router(procs, [a, b])
    url = router + "/v1/chat/completions"
    lines: list[str] = []
    with httpx.stream(
        "POST", url, json={**CHAT, "max_tokens": 1000, "stream": True}, headers={"X-Request-ID": "s-1"}
    ) as r:
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("data:") and len(lines) < 3:
                assert httpx.post(router + "/v1/cancel/s-1").json()["cancelled"] is True
    assert json.loads(lines[-1].removeprefix("data:") or lines[-2][5:])["error"]["code"] == "cancelled"

    result: dict[str, httpx.Response] = {}

    def pending() -> None:
        body = {**CHAT, "model": "m2"}
        result["r"] = httpx.post(url, json=body, headers={"X-Request-ID": "p-1"}, timeout=30)

    t = threading.Thread(target=pending)
    t.start()
    wait_until(lambda: stats(b)["in_flight"] == 1, 10, what="request reaches the backend")
    assert httpx.post(router + "/v1/cancel/p-1").status_code == 200
    t.join(10)
    assert result["r"].status_code == 499 and result["r"].json()["error"]["code"] == "cancelled"
    wait_until(lambda: _aborted_and_idle(a, 1) and _aborted_and_idle(b, 1), 10, what="aborts")
