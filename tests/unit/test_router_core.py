"""Router internals without sockets: SSE usage scanning, pool queueing, circuit breaker, config."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from corral.errors import ConfigError
from corral.router import sse
from corral.router.config import load_settings
from corral.router.instance import CLOSED, HALF_OPEN, OPEN, Instance
from corral.router.pool import Pool, QueueFull, QueueTimeout


def _first(cands: list[Instance], ctx: object) -> Instance:
    return cands[0]


def test_usage_found_only_when_not_null() -> None:
    assert sse.usage_at(b'data: {"choices":[1],"usage":null}\n\n') is None
    chunk = b'data: {"choices":[],"usage": {"prompt_tokens": 3, "completion_tokens": 7}}\n\ndata: [DONE]\n\n'
    assert sse.usage_at(chunk) == (3, 7)
    body = b'{"usage":{"prompt_tokens":2,"total_tokens":9,"completion_tokens":7}}'
    assert sse.usage_at(body) == (2, 7)


def test_strip_usage_event_keeps_the_rest() -> None:
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}'
    chunk = b'data: {"choices":[{"x":1}],"usage":null}\n\n' + usage + b"\n\ndata: [DONE]\n\n"
    out = sse.strip_usage_event(chunk)
    assert out == b'data: {"choices":[{"x":1}],"usage":null}\n\ndata: [DONE]\n\n'
    spaced = b'data: {"choices": [], "usage": {"prompt_tokens": 1}}'  # not the compact shape: parsed
    assert sse.strip_usage_event(spaced + b"\n\ndata: [DONE]\n\n") == b"data: [DONE]\n\n"
    kept = b'data: {"choices":[{"x":1}],"usage":{"prompt_tokens":1}}\n\n'  # has choices: kept
    assert sse.strip_usage_event(kept) == kept


def test_error_event_is_openai_shaped() -> None:
    ev = sse.error_event("boom")
    assert ev.startswith(b"data: ") and ev.endswith(b"\n\n")
    assert json.loads(ev[6:])["error"]["message"] == "boom"


async def test_queue_hands_a_freed_slot_to_the_oldest_waiter() -> None:
    pool = Pool(queue_size=2)
    inst = pool.upsert(Instance("http://a:1", ("m",), state="healthy", max_concurrency=1))
    held = await pool.acquire("m", _first, None, 1.0)
    assert held is inst
    w1 = asyncio.create_task(pool.acquire("m", _first, None, 5.0))
    w2 = asyncio.create_task(pool.acquire("m", _first, None, 5.0))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await pool.acquire("m", _first, None, 1.0)
    pool.release(inst)
    assert await w1 is inst and not w2.done()
    pool.release(inst)
    assert await w2 is inst
    with pytest.raises(QueueTimeout):
        await pool.acquire("m", _first, None, 0.01)
    assert inst.outstanding == 1


async def test_no_healthy_instance_returns_none_without_queueing() -> None:
    pool = Pool()
    pool.upsert(Instance("http://a:1", ("m",), state="starting"))
    assert await pool.acquire("m", _first, None, 1.0) is None


def test_breaker_opens_then_half_opens_with_one_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    inst = Instance("http://a:1", ("m",), state="healthy", breaker_failures=2, cooldown_s=10)
    inst.on_failure()
    assert inst.circuit is CLOSED
    inst.on_failure()
    assert inst.circuit is OPEN and not inst.routable(inst.open_until - 1)
    later = inst.open_until + 0.1
    assert inst.routable(later)
    inst.on_dispatch(later)
    assert inst.circuit is HALF_OPEN and not inst.routable(later)
    inst.on_success()
    assert inst.circuit is CLOSED and inst.routable(later)


def test_connect_error_takes_instance_out_at_once() -> None:
    inst = Instance("http://a:1", ("m",), state="healthy")
    inst.on_failure(connect=True)
    assert not inst.healthy and not inst.routable(0)


def test_config_file_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[router]\npolicy = "round_robin"\naliases = {gpt = "m1"}\n'
        'workers = ["http://a:1/", {url = "http://b:2", max_concurrency = 1}]\n'
        'max_concurrency = {"http://a:1" = 4}\n[router.breaker]\nfailures = 2\n'
    )
    s = load_settings(f, {"port": 9, "workers": ["http://c:3"], "policy": None})
    assert s.port == 9 and s.policy == "round_robin" and s.aliases == {"gpt": "m1"}
    assert [w.url for w in s.workers] == ["http://a:1", "http://b:2", "http://c:3"]
    assert s.concurrency_for("http://a:1") == 4 and s.concurrency_for("http://b:2") == 1
    assert s.breaker.failures == 2
    f.write_text("[router]\nqueue_size = -1\n")
    with pytest.raises(ConfigError, match="queue_size"):
        load_settings(f, {})


async def test_slot_handed_over_in_the_timeout_turn_is_used_or_freed() -> None:
    """The waiter gets its slot in the same loop turn as its queue timeout fires (on 3.12's
    wait_for that raised TimeoutError and leaked the slot: max_concurrency=1 stayed busy)."""
    loop = asyncio.get_running_loop()
    pool = Pool(queue_size=2)
    inst = pool.upsert(Instance("http://a:1", ("m",), state="healthy", max_concurrency=1))
    assert await pool.acquire("m", _first, None, 1.0) is inst
    now = loop.time()
    clock = [now]
    loop.time = lambda: clock[0]  # type: ignore[method-assign]  # a frozen clock the test moves
    try:
        loop.call_at(now + 5.0, pool.release, inst)  # due together with the timeout; runs first
        waiter = asyncio.create_task(pool.acquire("m", _first, None, 5.0))
        await asyncio.sleep(0)  # the waiter is queued and its timeout armed at now + 5
        clock[0] = now + 5.0  # the next loop turn runs the release and the timeout together
        try:
            got = await asyncio.wait_for(waiter, 10)
        except QueueTimeout:
            got = None
    finally:
        del loop.time  # type: ignore[method-assign]
    if got is inst:
        assert inst.outstanding == 1
        pool.release(inst)
    assert inst.outstanding == 0  # never leaked
    assert await pool.acquire("m", _first, None, 0.1) is inst
