"""Gemma 3 270M on llama.cpp as an on-demand model: the first request wakes it (cold), the next
ones are warm, it unloads when idle (its process is gone), and the next request wakes it again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from llamacpp_fleet import ALIAS, Fleet, assemble_model, make_fleet
from openai import OpenAI

from support import kill_tree, wait_until

IDLE_S = 3


@pytest.fixture(scope="module")
def od_fleet(installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base: Path = tmp_path_factory.mktemp("llamacpp-ondemand")
    assemble_model(base)
    f = make_fleet(base)
    text = f.config.read_text()
    assert "replicas = 2\n" in text
    f.config.write_text(
        text.replace("replicas = 2\n", f'replicas = 1\nstart = "on_demand"\nidle_unload_s = {IDLE_S}\n', 1)
    )
    try:
        up = f.up(timeout=300)
        assert up.returncode == 0, f"corral up -d failed:\n{up.stdout}\n{up.stderr}"
        yield f
    finally:
        f.down()
        for p in f.processes():
            kill_tree(p.pid)


def _state(f: Fleet) -> str:
    return str(httpx.get(f"{f.router}/v1/models/{ALIAS}", timeout=5).json()["corral"]["state"])


def _ask(client: OpenAI) -> float:
    t0 = time.monotonic()
    r = client.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0
    )
    assert r.choices[0].message.content is not None
    return time.monotonic() - t0


def test_gemma_on_demand_cold_warm_unload_and_wake_again(od_fleet: Fleet) -> None:
    f = od_fleet
    client = OpenAI(base_url=f"{f.router}/v1", api_key="none", max_retries=0, timeout=300)
    wait_until(lambda: _state(f) == "stopped", 30, what="gemma listed as stopped")
    assert f.status()["gemma-0"]["state"] == "stopped"

    cold = _ask(client)
    warm = min(_ask(client) for _ in range(3))
    health = httpx.get(f"http://127.0.0.1:{f.replica_port(0) + 1}/health", timeout=5).json()
    pid, sitter = health["pid"], health["sitter_pid"]
    assert pid and psutil.pid_exists(pid)
    print(f"\ngemma on demand: cold first request {cold:.2f} s, warm {warm:.2f} s")

    wait_until(lambda: _state(f) == "stopped", IDLE_S + 60, what="idle unload")
    wait_until(lambda: not psutil.pid_exists(pid), 30, what="llama.cpp process gone")

    assert psutil.pid_exists(sitter)  # parked: the engine went, its sitter stays for the next wake
    again = _ask(client)
    assert _state(f) == "ready"
    health = httpx.get(f"http://127.0.0.1:{f.replica_port(0) + 1}/health", timeout=5).json()
    assert health["sitter_pid"] == sitter and health["pid"] != pid
    woken_ready_s = float(health["ready_s"])
    print(f"gemma woken again: {again:.2f} s (llama.cpp's own start {woken_ready_s:.2f} s)")

    # An operator's `corral start` of the parked replica starts its engine through its sitter.
    wait_until(lambda: _state(f) == "stopped", IDLE_S + 60, what="idle unload again")
    r = f.corral("start", "gemma-0")
    assert r.returncode == 0, r.stdout + r.stderr
    sitter_health = f"http://127.0.0.1:{f.replica_port(0) + 1}/health"
    wait_until(lambda: httpx.get(sitter_health, timeout=5).status_code == 200, 120, what="engine ready")
    assert httpx.get(sitter_health, timeout=5).json()["sitter_pid"] == sitter
