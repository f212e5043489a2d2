"""Models on demand through a real launcher, registry, router and sitters: the first request
wakes the model (once, however many arrive together), idle unload stops it, the next request
wakes it again, and a model that cannot start answers 503 with the reason, never a hang."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from launcher_helpers import Stack
from openai import OpenAI

from support import free_port, wait_until

pytestmark = pytest.mark.slow


def _stack(tmp_path: Path, stacks: list[Stack], idle_s: float = 2.0) -> tuple[Stack, int, int]:
    registry, router, od, bad = free_port(), free_port(), free_port(), free_port()
    body = (
        f"[registry]\nport = {registry}\n"
        f"[router]\nport = {router}\n"
        '[[backend]]\nname = "od"\npreset = "mock"\nmodels = ["od-model"]\n'
        f'port = {od}\nstart = "on_demand"\nidle_unload_s = {idle_s}\nargs = ["--itl-ms", "30"]\n'
        '[[backend]]\nname = "bad"\npreset = "mock"\nmodels = ["bad-model"]\n'
        f'port = {bad}\nstart = "on_demand"\ncold_start_timeout_s = 3\n'
        # A mock whose /health says "loading" for ever: the model can never become ready.
        'args = ["--startup-delay-s", "100000"]\n'
    )
    s = Stack(tmp_path, body)
    stacks.append(s)
    s.up()
    return s, router, od


def _card(router: int, model: str) -> dict:
    r = httpx.get(f"http://127.0.0.1:{router}/v1/models/{model}", timeout=5)
    r.raise_for_status()
    return r.json()


def _backend_pid(sitter_port: int) -> int | None:
    """The backend's PID as its sitter reports it."""
    return httpx.get(f"http://127.0.0.1:{sitter_port}/health", timeout=5).json().get("pid")


def test_first_requests_wake_the_model_once_then_idle_unload_and_wake_again(
    tmp_path: Path,
    stacks: list[Stack],
) -> None:
    s, router, od = _stack(tmp_path, stacks)
    client = OpenAI(base_url=f"http://127.0.0.1:{router}/v1", api_key="none", max_retries=0, timeout=60)
    wait_until(lambda: "od-model" in [m.id for m in client.models.list().data], 20, what="od-model listed")
    # Its sitter is up from the start with the engine parked: a wake pays the engine's start only.
    up = lambda: (s.services()["od-0"].get("sitter") or {}).get("state") == "healthy"  # noqa: E731
    wait_until(up, 30, what="the parked sitter up")
    view = s.services()["od-0"]
    assert view["state"] == "stopped" and view["parked"] is True and view["pid"] is None
    sitter = view["sitter"]["pid"]
    assert _card(router, "od-model")["corral"]["state"] == "stopped"

    def ask(i: int) -> str:
        r = client.chat.completions.create(
            model="od-model", messages=[{"role": "user", "content": f"hi {i}"}], max_tokens=4
        )
        return r.choices[0].message.content or ""

    # A long stream (400 tokens at 30 ms) stays in flight while we look: the model cannot be
    # unloaded under it, however short idle_unload_s is.
    t0 = time.monotonic()
    long = client.chat.completions.create(
        model="od-model",
        messages=[{"role": "user", "content": "long"}],
        max_tokens=400,
        stream=True,
        extra_body={"ignore_eos": True},  # the mock runs to max_tokens, as vLLM does
    )
    chunks = iter(long)
    first = next(chunks)
    with ThreadPoolExecutor(20) as ex:
        answers = list(ex.map(ask, range(20)))
    cold = time.monotonic() - t0
    assert len(answers) == 20 and all(answers)
    wait_until(lambda: s.services()["od-0"]["state"] == "healthy", 15, what="od-0 healthy")
    starts = [
        e
        for e in s.events({("od-0", "healthy")})
        if e["name"] == "od-0" and e["state"] == "starting" and e["pid"]  # spawned, not waiting
    ]
    # 21 concurrent first requests started the model once: one backend process. (A backend's
    # events carry its own PID; its sitter's changes while it starts repeat "starting".)
    assert len({e["pid"] for e in starts}) == 1, starts
    card = _card(router, "od-model")["corral"]
    assert card["state"] == "ready" and card["replicas_ready"] == 1 and card["on_demand"] is True
    backend = _backend_pid(od + 1)
    assert backend is not None and psutil.pid_exists(backend)
    rest = list(chunks)  # the whole stream arrives: nothing stopped it
    assert first.choices and rest[-1].choices[0].finish_reason == "length"

    # No request for idle_unload_s: drained and the engine stopped (its process gone); the
    # sitter stays, parked.
    wait_until(lambda: s.services()["od-0"]["state"] == "stopped", 30, what="idle unload")
    wait_until(lambda: not psutil.pid_exists(backend), 10, what="backend gone")
    assert s.services()["od-0"]["parked"] is True and psutil.pid_exists(sitter)
    wait_until(lambda: _card(router, "od-model")["corral"]["state"] == "stopped", 10, what="stopped state")
    metrics = httpx.get(f"http://127.0.0.1:{router}/metrics", timeout=5).text
    assert 'corral_model_state{model="od-model",state="stopped"} 1.0' in metrics

    # The next request wakes it again.
    assert ask(99)
    wait_until(lambda: s.services()["od-0"]["state"] == "healthy", 15, what="od-0 healthy again")
    assert s.services()["od-0"]["sitter"]["pid"] == sitter and s.services()["od-0"]["parked"] is False
    assert cold < 60


def test_a_model_that_cannot_start_answers_503_with_the_reason(
    tmp_path: Path,
    stacks: list[Stack],
) -> None:
    s, router, _ = _stack(tmp_path, stacks)
    client = OpenAI(base_url=f"http://127.0.0.1:{router}/v1", api_key="none", max_retries=0, timeout=30)
    wait_until(lambda: "bad-model" in [m.id for m in client.models.list().data], 20, what="bad-model listed")
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="bad-model", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503
    assert time.monotonic() - t0 < 20
    body = info.value.response.json()["error"]
    assert "bad-model" in body["message"] and body["code"] in ("cold_start_timeout", "model_unavailable")
    # Unknown stays 404, and the wake endpoint refuses unknown names.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert s.api("POST", "/api/models/nope/wake").status_code == 404
    assert {m["entry"] for m in s.api("GET", "/api/models").json()["models"]} == {"od", "bad"}


@pytest.mark.fleet  # a reload and a rolling restart of a whole stack: `make test-fleet`
def test_reload_announces_a_new_on_demand_model_and_a_rolling_restart_keeps_it_awake(
    tmp_path: Path,
    stacks: list[Stack],
) -> None:
    registry, router, od = free_port(), free_port(), free_port()
    base = f"[registry]\nport = {registry}\n[router]\nport = {router}\n"
    s = Stack(tmp_path, base)
    stacks.append(s)
    s.up()
    # Added by a reload: announced (listed as stopped, its sitter parked), woken by a request.
    with s.file.open("a") as f:
        f.write(
            f'[[backend]]\nname = "od"\npreset = "mock"\nmodels = ["od-model"]\nport = {od}\n'
            'start = "on_demand"\nidle_unload_s = 600\n'
        )
    r = s.run("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: s.services()["od-0"]["parked"] is True, 30, what="od-0 parked")
    client = OpenAI(base_url=f"http://127.0.0.1:{router}/v1", api_key="none", max_retries=0, timeout=60)
    wait_until(lambda: _card(router, "od-model")["corral"]["state"] == "stopped", 30, what="od-model listed")
    assert client.chat.completions.create(model="od-model", messages=[{"role": "user", "content": "hi"}])
    wait_until(lambda: s.services()["od-0"]["state"] == "healthy", 15, what="od-0 awake")
    # A rolling restart of an awake replica brings it back awake (its sitter starts parked).
    r = s.run("restart", "od", "--rolling")
    assert r.returncode == 0, r.stdout + r.stderr
    view = s.services()["od-0"]
    assert view["state"] == "healthy" and view["parked"] is False
    assert _card(router, "od-model")["corral"]["state"] == "ready"
