"""`corral router --workers N`: processes on one port, one summed /metrics, started and stopped as one."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
from pathlib import Path

import httpx
import psutil
from sitter_helpers import start_registry
from test_router_support import start_mock, start_router

from support import CorralProcs, alive, wait_until

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}


def _requests_total(text: str) -> int:
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("corral_router_requests_total{")
    )


def test_two_workers_share_the_port_sum_their_metrics_and_stop_as_one(procs: CorralProcs) -> None:
    mock = start_mock(procs, "m1")
    url = start_router(procs, [mock], "--workers", "2")
    parent = psutil.Process(procs.procs[-1].pid)
    workers = wait_until(
        lambda: parent.children() if len(parent.children()) == 2 else None, 30, what="2 workers"
    )
    # Each worker probes the static worker on its own: wait until both route.
    wait_until(
        lambda: len({h["pid"] for h in _healths(url, 20) if h["healthy"] == 1}) == 2,
        30,
        what="both workers ready",
    )
    pids = set()
    for _ in range(40):  # a new connection each time: the kernel spreads them over the workers
        with httpx.Client(base_url=url, timeout=10) as c:
            r = c.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 200, r.text
            pids.add(c.get("/health").json()["pid"])
    assert pids == {w.pid for w in workers}
    # /metrics on any worker is the sum over both.
    for _ in range(4):
        assert _requests_total(httpx.get(url + "/metrics").text) == 40

    # A worker that dies is started again; the other keeps serving meanwhile.
    os.kill(workers[0].pid, signal.SIGKILL)
    assert httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
    wait_until(
        lambda: len(parent.children()) == 2 and workers[0] not in parent.children(), 30, what="restart"
    )

    # SIGTERM to the parent stops the whole tree.
    every = [parent, *parent.children()]
    os.kill(parent.pid, signal.SIGTERM)
    wait_until(lambda: not alive(every), 20, what="router and workers gone")


def _healths(url: str, n: int) -> list[dict[str, int]]:
    out = []
    for _ in range(n):
        with httpx.Client(base_url=url, timeout=5) as c:
            out.append(c.get("/health").json())
    return out


class _Wake(http.server.BaseHTTPRequestHandler):
    """A launcher's wake URL that accepts and never makes the model ready."""

    def do_POST(self) -> None:
        body = json.dumps({"state": "loading", "generation": 1}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_on_demand_activity_is_the_sum_over_every_worker(procs: CorralProcs, tmp_path: Path) -> None:
    # The launcher unloads an idle model from what GET /admin/models says: with --workers N a
    # request held (or in flight) on any worker must count, whichever worker answers.
    registry, _ = start_registry(procs, tmp_path)
    wake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Wake)
    threading.Thread(target=wake.serve_forever, daemon=True).start()
    try:
        meta = {"launcher": True, "replicas": 1, "cold_start_timeout_s": 8, "generation": 0}
        entry = {"service": "od", "kind": "model", "url": f"http://127.0.0.1:{wake.server_port}/wake",
                 "models": ["od-model"], "state": "stopped", "metadata": meta}  # fmt: skip
        httpx.post(f"{registry}/v1/instances", json=entry, timeout=5).raise_for_status()
        url = start_router(procs, [], "--workers", "2", "--registry-url", registry)
        parent = psutil.Process(procs.procs[-1].pid)
        wait_until(lambda: len(parent.children()) == 2, 30, what="2 workers")
        wait_until(
            lambda: all(len(a) == 1 for a in _activities(url, 8)), 30, what="every worker knows od-model"
        )
        held = threading.Thread(
            target=lambda: httpx.post(
                url + "/v1/chat/completions", json={**CHAT, "model": "od-model"}, timeout=30
            )
        )
        held.start()
        wait_until(lambda: _activities(url, 1)[0]["od-model"]["held"] == 1, 10, what="the request held")
        answers = _activities(url, 12)  # new connections: both workers answer
        assert all(a["od-model"]["held"] == 1 for a in answers), answers
        held.join(30)
        assert all(
            a["od-model"]["held"] == 0 and a["od-model"]["in_flight"] == 0 for a in _activities(url, 6)
        )
    finally:
        wake.shutdown()


def _activities(url: str, n: int) -> list[dict[str, dict[str, float]]]:
    out = []
    for _ in range(n):
        with httpx.Client(base_url=url, timeout=5) as c:
            out.append(c.get("/admin/models").json()["models"])
    return out
