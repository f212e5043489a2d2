"""Policies' distribution, prefix affinity, and per-instance concurrency with its queue."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_router_support import start_mock, start_router, stats

from support import CorralProcs, wait_until

BODY = {"model": "m1", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[CorralProcs, str, str]]:
    procs = CorralProcs()
    try:
        yield procs, start_mock(procs, "m1"), start_mock(procs, "m1")
    finally:
        procs.close()


def _spread(
    pair: tuple[CorralProcs, str, str], policy: str, bodies: list[dict], headers=None
) -> tuple[int, int]:
    procs, a, b = pair
    router = start_router(procs, [a, b], "--policy", policy)
    before = stats(a)["total"], stats(b)["total"]
    with httpx.Client() as c:
        for body in bodies:
            assert c.post(router + "/v1/chat/completions", json=body, headers=headers).status_code == 200
    return stats(a)["total"] - before[0], stats(b)["total"] - before[1]


def test_round_robin_alternates(pair: tuple[CorralProcs, str, str]) -> None:
    assert _spread(pair, "round_robin", [BODY] * 20) == (10, 10)


@pytest.mark.parametrize("policy", ["least_outstanding", "power_of_two"])
def test_load_aware_policies_use_both(pair: tuple[CorralProcs, str, str], policy: str) -> None:
    na, nb = _spread(pair, policy, [BODY] * 30)
    assert na + nb == 30 and na >= 3 and nb >= 3


def test_prefix_affinity_sticks_by_user_session_and_conversation(pair: tuple[CorralProcs, str, str]) -> None:
    assert 0 in _spread(pair, "prefix_affinity", [{**BODY, "user": "alice"}] * 8)
    assert 0 in _spread(pair, "prefix_affinity", [BODY] * 8, headers={"X-Session-ID": "conv-42"})
    turns = [
        {**BODY, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"}]},
        {
            **BODY,
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"},
            ],
        },
    ] * 4
    assert 0 in _spread(pair, "prefix_affinity", turns)
    users = [{**BODY, "user": f"user-{i}"} for i in range(40)]
    na, nb = _spread(pair, "prefix_affinity", users)
    assert na >= 5 and nb >= 5  # different keys spread over the ring


def test_concurrency_limit_queues_then_times_out_with_retry_after(procs: CorralProcs, tmp_path: Path) -> None:
    slow = start_mock(procs, "m1", "--ttft-ms", "150")
    cfg = {"max_concurrency": {slow: 1}, "queue_timeout_s": 5.0, "queue_size": 8}
    router = start_router(procs, [slow], config=cfg, tmp=tmp_path)
    url = router + "/v1/chat/completions"
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as ex:
        codes = list(ex.map(lambda _: httpx.post(url, json=BODY, timeout=30).status_code, range(4)))
    assert codes == [200] * 4
    assert time.monotonic() - t0 >= 4 * 0.15  # one at a time: the limit held

    late = start_mock(procs, "m1", "--ttft-ms", "20000")
    cfg = {"max_concurrency": {late: 1}, "queue_timeout_s": 0.3, "queue_size": 1}
    router = start_router(procs, [late], config=cfg, tmp=tmp_path)
    url = router + "/v1/chat/completions"
    with ThreadPoolExecutor(3) as ex:
        hold = ex.submit(httpx.post, url, json=BODY, timeout=httpx.Timeout(30, read=3))
        # The second request must find the slot taken: wait for the first to reach the backend.
        wait_until(lambda: stats(late)["in_flight"] == 1, 30, what="first request holds the slot")
        r = httpx.post(url, json=BODY, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] in ("queue_timeout", "queue_full")
        with pytest.raises(httpx.ReadTimeout):
            hold.result()
