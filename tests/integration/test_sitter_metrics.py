"""The sitter's /metrics: its engine's own metrics re-exposed with service, replica and host labels."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
from sitter_helpers import start_sitter, wait_backend_state

from corral import promtext
from support import CorralProcs, free_port


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"http://127.0.0.1:{port + 1}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in promtext.parse(r.text) for s in f.samples
    }


def test_engine_metrics_are_labelled(procs: CorralProcs, tmp_path: Path) -> None:
    port = free_port()
    start_sitter(procs, tmp_path, port, "--name", "chat-3", "--service", "chat", "--replica", "3")
    wait_backend_state(port, "healthy")
    samples = _samples(port)
    ours = (("host", socket.gethostname()), ("replica", "3"), ("service", "chat"))
    assert samples[("corral_sitter_backend_up", ours)] == 1
    assert samples[("corral_sitter_backend_restarts_total", ours)] == 0
    assert samples[("corral_sitter_engine_metrics_up", ours)] == 1
    # The mock's own (vLLM-named) metrics, with the sitter's labels added to the engine's.
    engine = [labels for name, labels in samples if name == "vllm:num_requests_running"]
    assert engine and all(set(ours) <= set(labels) for labels in engine)


def test_an_engine_without_metrics_costs_only_a_zero(procs: CorralProcs, tmp_path: Path) -> None:
    port = free_port()
    server = f"{sys.executable} -m http.server {port} --bind 127.0.0.1"  # 404 for /metrics
    start_sitter(
        procs, tmp_path, port, "--service-type", "command", "--command", server, "--health-path", "/"
    )
    wait_backend_state(port, "healthy")
    samples = _samples(port)
    ours = (("host", socket.gethostname()), ("replica", "0"), ("service", f"command-{port}"))
    assert samples[("corral_sitter_engine_metrics_up", ours)] == 0
    assert samples[("corral_sitter_backend_up", ours)] == 1
    assert {name for name, _ in samples} == {
        "corral_sitter_backend_up", "corral_sitter_backend_restarts_total", "corral_sitter_engine_metrics_up",
    }  # fmt: skip
