"""`corral router --workers N`: processes on one port, one summed /metrics, started and stopped as one."""

from __future__ import annotations

import os
import signal

import httpx
import psutil
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
