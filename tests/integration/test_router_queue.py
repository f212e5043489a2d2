"""The fair queue through a real router: priorities, a client that leaves, depth and wait metrics."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
from test_router_support import start_mock, start_router, stats

from corral.router.keys import digest
from support import CorralProcs, wait_until

BODY = {"model": "m1", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}


def depth(base: str, key: str) -> int:
    pattern = r'corral_router_queue_depth\{key="' + key + r'",model="m1"\} (\d+)'
    m = re.search(pattern, httpx.get(base + "/metrics").text)
    return int(m.group(1)) if m else 0


def test_priority_order_and_a_leaving_client_frees_its_place(procs: CorralProcs, tmp_path: Path) -> None:
    slow = start_mock(procs, "m1", "--ttft-ms", "200", "--itl-ms", "50")
    cfg = {
        "max_concurrency": {slow: 1},
        "queue_timeout_s": 60.0,
        "keys": [
            {"name": "A", "key_sha256": digest("ka"), "priority": 1},
            {"name": "B", "key_sha256": digest("kb"), "priority": 5},
        ],
    }
    base = start_router(procs, [slow], config=cfg, tmp=tmp_path)
    url = base + "/v1/chat/completions"
    done: list[str] = []
    lock = threading.Lock()

    def call(key: str, tag: str) -> None:
        r = httpx.post(url, json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert r.status_code == 200
        with lock:
            done.append(tag)

    def hold() -> None:  # holds the one slot until cancelled
        long = {**BODY, "max_tokens": 5000, "ignore_eos": True, "stream": True}
        headers = {"Authorization": "Bearer kb", "X-Request-ID": "holder"}
        with httpx.stream("POST", url, json=long, headers=headers, timeout=60) as r:
            r.read()

    holder = threading.Thread(target=hold)
    holder.start()
    wait_until(lambda: 'key_in_flight{key="B"} 1.0' in httpx.get(base + "/metrics").text, 20)
    before = stats(slow)["total"]
    # A B client that gives up while queued leaves the queue at once and never reaches the backend.
    leaver = threading.Thread(target=_gives_up, args=(url,))
    leaver.start()
    wait_until(lambda: depth(base, "B") == 1, 10, what="leaver queued")
    leaver.join()
    wait_until(lambda: depth(base, "B") == 0, 5, what="leaver gone from the queue")
    threads: list[threading.Thread] = []
    for i in range(1, 4):
        threads.append(threading.Thread(target=call, args=("kb", f"b{i}")))
        threads[-1].start()
    wait_until(lambda: depth(base, "B") == 3, 10, what="B queued")
    for i in range(3):
        threads.append(threading.Thread(target=call, args=("ka", f"a{i}")))
        threads[-1].start()
    wait_until(lambda: depth(base, "A") == 3, 10, what="A queued")
    cancel = httpx.post(base + "/v1/cancel/holder", headers={"Authorization": "Bearer ka"})
    assert cancel.status_code == 404  # a key cancels only its own requests
    assert httpx.post(base + "/v1/cancel/holder", headers={"Authorization": "Bearer kb"}).status_code == 200
    holder.join()
    for t in threads:
        t.join()
    assert sorted(done[:3]) == ["a0", "a1", "a2"]  # priority 1 overtakes the B requests queued first
    assert sorted(done[3:]) == ["b1", "b2", "b3"]
    assert stats(slow)["total"] - before == 6  # the leaver's request never went upstream
    metrics = httpx.get(base + "/metrics").text
    assert 'corral_router_queue_wait_seconds_count{key="A",model="m1"} 3.0' in metrics


def _gives_up(url: str) -> None:
    try:
        httpx.post(url, json=BODY, headers={"Authorization": "Bearer kb"}, timeout=1.0)
    except httpx.TimeoutException:
        return
    raise AssertionError("the queued request should still have been waiting")
