"""`corral mock`'s failure knobs and lifecycle: startup delay, faults, crash, hang, abort, workers."""

from __future__ import annotations

import importlib.util
import signal
import time
from typing import Any

import httpx
import openai
import psutil
import pytest

from support import CorralProcs, free_port, wait_http, wait_until

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def start(procs: CorralProcs, *args: str, health: int | None = 200) -> tuple[str, Any]:
    port = free_port()
    p = procs.start("mock", "--port", str(port), "--models", "m", *args)
    base = f"http://127.0.0.1:{port}"
    if health is not None:
        wait_http(f"{base}/health", timeout=30, status=health)
    return base, p


def stats(base: str) -> dict[str, Any]:
    return httpx.get(f"{base}/stats", timeout=5).json()


def test_health_is_503_loading_during_startup_delay_then_200(procs: CorralProcs) -> None:
    base, _ = start(procs, "--startup-delay-s", "1.5", health=503)
    r = httpx.get(f"{base}/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    r = httpx.post(f"{base}/v1/chat/completions", json=CHAT)
    assert r.status_code == 503 and r.json()["error"]["code"] == "loading"
    wait_http(f"{base}/health", timeout=30, status=200)
    assert httpx.post(f"{base}/v1/chat/completions", json=CHAT).status_code == 200


def test_fail_rate_one_always_fails_with_openai_error(procs: CorralProcs) -> None:
    base, _ = start(procs, "--fail-rate", "1")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code in (500, 503)
    for _ in range(6):
        r = httpx.post(f"{base}/v1/completions", json={"model": "m", "prompt": "x"})
        assert r.status_code in (500, 503) and r.json()["error"]["code"] == "injected_failure"
    assert stats(base)["failed"] == 7


def test_fail_rate_half_fails_some_not_all_and_repeats_per_seed(procs: CorralProcs) -> None:
    runs = []
    for _ in range(2):
        base, _ = start(procs, "--fail-rate", "0.5", "--seed", "3")
        runs.append(
            [
                httpx.post(f"{base}/v1/completions", json={"model": "m", "prompt": "x"}).status_code
                for _ in range(30)
            ]
        )
    assert runs[0] == runs[1]
    assert 200 in runs[0] and {500, 503} & set(runs[0])


def test_crash_after_serves_n_then_exits_hard(procs: CorralProcs) -> None:
    base, p = start(procs, "--crash-after", "2")
    for _ in range(2):
        assert httpx.post(f"{base}/v1/chat/completions", json=CHAT).status_code == 200
    httpx.get(f"{base}/health")  # probes do not count
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{base}/v1/chat/completions", json=CHAT)
    assert p.wait(timeout=10) == 3


def test_hang_after_accepts_but_never_answers(procs: CorralProcs) -> None:
    base, p = start(procs, "--hang-after", "1")
    assert httpx.post(f"{base}/v1/chat/completions", json=CHAT).status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=httpx.Timeout(5, read=0.5))
    with pytest.raises(httpx.ReadTimeout):  # health hangs too: liveness probes must see it
        httpx.get(f"{base}/health", timeout=httpx.Timeout(5, read=0.3))
    assert p.poll() is None
    # The client that gave up is counted as aborted (its connection closed).
    s = wait_until(lambda: (d := stats(base))["aborted"] == 1 and d, timeout=10, what="aborted == 1")
    assert s["completed"] == 1 and s["in_flight"] == 0


def test_client_disconnect_mid_stream_is_counted_and_stops_generation(procs: CorralProcs) -> None:
    base, _ = start(procs, "--itl-ms", "50", "--ttft-ms", "10")
    body = {**CHAT, "stream": True, "max_tokens": 200}
    with httpx.Client(timeout=10) as c, c.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(3)]
        assert got[0].startswith("data: ")
        mid = stats(base)
        assert mid["in_flight"] == 1 and mid["by_model"]["m"]["in_flight"] == 1
    t0 = time.monotonic()
    s = wait_until(lambda: (d := stats(base))["aborted"] == 1 and d, timeout=10, what="aborted == 1")
    # Detected on the transport closing: well within one inter-token gap plus poll slack.
    assert time.monotonic() - t0 < 2
    assert s["in_flight"] == 0 and s["completed"] == 0 and s["by_model"]["m"]["aborted"] == 1


def test_client_disconnect_before_first_token_and_non_streaming(procs: CorralProcs) -> None:
    base, _ = start(procs, "--ttft-ms", "5000")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{base}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=httpx.Timeout(5, read=0.3)
        )
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=httpx.Timeout(5, read=0.3))
    s = wait_until(lambda: (d := stats(base))["aborted"] == 2 and d, timeout=10, what="aborted == 2")
    assert s["in_flight"] == 0


def test_latency_knobs_shape_stream_timing(procs: CorralProcs) -> None:
    base, _ = start(procs, "--ttft-ms", "200", "--itl-ms", "50")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
    t0 = time.monotonic()
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=5,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.monotonic() - t0
    total = time.monotonic() - t0
    assert first is not None and first >= 0.19
    assert total >= 0.19 + 4 * 0.05


def test_workers_share_the_port_and_die_with_the_parent(procs: CorralProcs) -> None:
    base, p = start(procs, "--workers", "2")
    kids = wait_until(
        lambda: len(k := psutil.Process(p.pid).children()) == 2 and k, timeout=30, what="2 workers"
    )
    pids = set()
    for _ in range(40):
        with httpx.Client() as c:  # a new connection each time: SO_REUSEPORT spreads them
            assert c.post(f"{base}/v1/chat/completions", json=CHAT).status_code == 200
            pids.add(c.get(f"{base}/stats").json()["pid"])
    assert pids == {k.pid for k in kids}
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=15) == 0
    for k in kids:
        wait_until(
            lambda k=k: not k.is_running() or k.status() == psutil.STATUS_ZOMBIE,
            timeout=10,
            what="worker gone",
        )


def test_workers_exit_when_the_parent_is_killed(procs: CorralProcs) -> None:
    _, p = start(procs, "--workers", "2")
    kids = wait_until(
        lambda: len(k := psutil.Process(p.pid).children()) == 2 and k, timeout=30, what="2 workers"
    )
    p.kill()
    p.wait(timeout=10)
    for k in kids:
        wait_until(
            lambda k=k: not k.is_running() or k.status() == psutil.STATUS_ZOMBIE,
            timeout=10,
            what="orphan gone",
        )


def test_port_in_use_is_one_line_error_not_traceback(procs: CorralProcs, tmp_path: Any) -> None:
    base, _ = start(procs)
    port = base.rsplit(":", 1)[1]
    log = tmp_path / "second.log"
    p = procs.start("mock", "--port", port, log=log)
    assert p.wait(timeout=30) == 2
    text = log.read_text()
    assert "already in use" in text and "Traceback" not in text


def test_cuda_mem_without_torch_is_a_clear_error(procs: CorralProcs, tmp_path: Any) -> None:
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed: --cuda-mem-gb is exercised by the GPU tests")
    log = tmp_path / "cuda.log"
    p = procs.start("mock", "--port", str(free_port()), "--cuda-mem-gb", "1", log=log)
    assert p.wait(timeout=60) == 2
    text = log.read_text()
    assert "--cuda-mem-gb" in text and "torch" in text and "Traceback" not in text


def test_hang_generation_after_keeps_health_and_models_answering(procs: CorralProcs) -> None:
    base, p = start(procs, "--hang-generation-after", "1")
    assert httpx.post(f"{base}/v1/chat/completions", json=CHAT).status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{base}/v1/completions", json={"model": "m", "prompt": "x"}, timeout=httpx.Timeout(5, read=0.5)
        )
    # The API server lies: health and the model list still say all is well.
    assert httpx.get(f"{base}/health", timeout=2).status_code == 200
    assert httpx.get(f"{base}/v1/models", timeout=2).json()["data"][0]["id"] == "m"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=httpx.Timeout(5, read=0.5))
    assert p.poll() is None
    s = wait_until(lambda: (d := stats(base))["aborted"] == 2 and d, timeout=10, what="aborted == 2")
    assert s["completed"] == 1 and s["in_flight"] == 0


def test_stall_after_tokens_stream_stops_with_connection_open(procs: CorralProcs) -> None:
    base, _ = start(procs, "--stall-after-tokens", "3")
    body = {**CHAT, "stream": True, "max_tokens": 10, "ignore_eos": True}
    got: list[str] = []
    with (
        httpx.Client(timeout=httpx.Timeout(5, read=1.0)) as c,
        c.stream("POST", f"{base}/v1/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        with pytest.raises(httpx.ReadTimeout):  # no end of body: the connection stays open, silent
            for line in r.iter_lines():
                if line.startswith("data: "):
                    got.append(line)
    assert len(got) == 4 and "[DONE]" not in "".join(got)  # the role chunk, then 3 tokens
    # A short answer ends before the stall point and completes; a longer non-streamed one hangs.
    r2 = httpx.post(f"{base}/v1/chat/completions", json={**CHAT, "max_tokens": 3, "ignore_eos": True})
    assert r2.status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{base}/v1/chat/completions",
            json={**CHAT, "max_tokens": 10, "ignore_eos": True},
            timeout=httpx.Timeout(5, read=0.5),
        )


def test_error_400_and_429_rates_answer_openai_errors_and_repeat_per_seed(procs: CorralProcs) -> None:
    runs = []
    for _ in range(2):
        base, _ = start(procs, "--error-400-rate", "0.3", "--error-429-rate", "0.2", "--seed", "5")
        with httpx.Client(timeout=30) as c:
            answers = [
                c.post(f"{base}/v1/completions", json={"model": "m", "prompt": "x"}) for _ in range(30)
            ]
        runs.append([a.status_code for a in answers])
    assert runs[0] == runs[1]  # drawn from the seed: the same sequence every run
    codes = runs[0]
    assert {200, 400, 429} == set(codes)
    assert 3 <= codes.count(400) <= 16 and 1 <= codes.count(429) <= 12
    bad = next(a for a in answers if a.status_code == 400)
    assert bad.json()["error"]["code"] == "injected_400"
    full = next(a for a in answers if a.status_code == 429)
    assert full.json()["error"]["code"] == "injected_429" and full.headers["retry-after"] == "1"


def test_slow_rate_delays_only_that_fraction(procs: CorralProcs) -> None:
    # --slow-ms is a lower bound on a slowed answer, whatever the load; a plain one takes far less.
    base, _ = start(procs, "--slow-rate", "0.5", "--slow-ms", "2500", "--seed", "1")
    times = []
    with httpx.Client(timeout=30) as c:
        for _ in range(8):
            t0 = time.monotonic()
            assert c.post(f"{base}/v1/completions", json={"model": "m", "prompt": "x"}).status_code == 200
            times.append(time.monotonic() - t0)
    slow = [t for t in times if t >= 2.5]
    assert 1 <= len(slow) <= 7, times


def test_fault_rates_over_one_are_a_clear_error(procs: CorralProcs, tmp_path: Any) -> None:
    log = tmp_path / "rates.log"
    p = procs.start(
        "mock", "--port", str(free_port()), "--error-400-rate", "0.7", "--fail-rate", "0.5", log=log
    )
    assert p.wait(timeout=60) == 2
    text = log.read_text()
    assert "--error-400-rate" in text and "Traceback" not in text
