"""`corral sit --router-url` in front of SGLang's own router (the `sglang-router` wheel, no GPU).

SGLang's router (0.3) has no ``/add_worker``; the sitter falls back to ``POST /workers`` and
``DELETE /workers/{id}``. The router probes ``/get_model_info`` on a new worker: the mock answers
404 there, so it does not try to fetch a tokenizer.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from sitter_helpers import sitter_info, start_sitter, wait_backend_state

from support import CorralProcs, free_port, kill_tree, wait_http, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def sglang_router(tmp_path: Path) -> Iterator[str]:
    """A real SGLang router on free loopback ports; its URL. Killed with its tree afterwards."""
    if importlib.util.find_spec("sglang_router") is None:
        pytest.fail("sglang-router is not installed: it is in the dev extra (pip install -e '.[dev]')")
    port, metrics_port = free_port(), free_port()
    argv = [
        sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
        "--policy", "round_robin", "--worker-startup-check-interval", "1", "--log-level", "warn",
    ]  # fmt: skip
    with open(tmp_path / "sglang-router.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.poll() is None and httpx.get(f"{url}/health", timeout=1).is_success, 60)
        yield url
    finally:
        kill_tree(proc.pid)


def _workers(router: str) -> list[str]:
    r = httpx.get(f"{router}/workers", timeout=5)
    r.raise_for_status()
    return [w["url"] for w in r.json()["workers"]]


def test_sitter_adds_removes_and_re_adds_its_backend_in_sglangs_router(
    procs: CorralProcs, tmp_path: Path, sglang_router: str
) -> None:
    port = free_port()
    sitter = start_sitter(procs, tmp_path, port, "--router-url", sglang_router, "--restart-delay", "1")
    worker = f"http://127.0.0.1:{port}"
    wait_until(lambda: worker in _workers(sglang_router), 60, interval=0.1, what="SGLang lists the worker")
    assert sitter_info(port)["router"]["member"] is True

    # The official SDK through SGLang's router reaches the mock behind the sitter.
    wait_http(f"{sglang_router}/readiness", timeout=30)
    with OpenAI(base_url=f"{sglang_router}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        reply = client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "hello"}], max_tokens=4
        )
    assert reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens >= 1

    pid = sitter_info(port)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: worker not in _workers(sglang_router), 30, interval=0.05, what="removed on crash")
    back = wait_backend_state(port, "healthy", timeout=60)
    assert back["pid"] != pid
    wait_until(lambda: worker in _workers(sglang_router), 60, interval=0.1, what="re-added after restart")

    sitter.send_signal(signal.SIGTERM)
    assert sitter.wait(timeout=30) == 0
    wait_until(lambda: worker not in _workers(sglang_router), 15, what="removed on SIGTERM")
