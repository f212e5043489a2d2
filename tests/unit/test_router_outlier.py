"""Stall counting, outlier ejection back-off, the reasons an instance is out, and the generation
probe's busy counter (no sockets)."""

from __future__ import annotations

import time

from corral.router.config import RouterSettings
from corral.router.health import Health
from corral.router.instance import OPEN, OUT_REASONS, Instance, out_reason
from corral.router.pool import Pool


def settings(**kw: object) -> RouterSettings:
    return RouterSettings.model_validate(kw)


def test_stall_streak_ejects_with_doubling_backoff_and_success_ends_the_streak() -> None:
    pool = Pool()
    health = Health(
        settings(outlier={"consecutive_stalls": 2, "base_ejection_s": 1, "max_ejection_s": 3}), pool
    )
    inst = pool.upsert(Instance("http://127.0.0.1:1", ("m",), state="healthy"))
    health.on_stall(inst)
    inst.on_success()  # a success between stalls: no streak
    health.on_stall(inst)
    assert not inst.ejected and inst.stalls == 1 and inst.stalls_total == 2
    health.on_stall(inst)
    assert inst.ejected and out_reason(inst, time.monotonic()) == "stalled"
    assert not inst.routable(time.monotonic())
    backoffs = []
    for _ in range(3):
        t0 = time.monotonic()
        health.eject(inst)
        backoffs.append(round(inst.ejected_until - t0))
    assert backoffs == [2, 3, 3]  # 1 s, then doubling, capped at max_ejection_s
    health.readmit(inst)
    assert inst.routable(time.monotonic()) and inst.stalls == 0 and out_reason(inst, time.monotonic()) is None


def test_registry_update_keeps_stall_state() -> None:
    pool = Pool()
    health = Health(settings(outlier={"consecutive_stalls": 1}), pool)
    health.on_stall(pool.upsert(Instance("http://h:1", ("m",), id="a", state="healthy")))
    fresh = pool.upsert(Instance("http://h:1", ("m",), id="a", state="healthy"))
    assert fresh.ejected and fresh.stalls_total == 1 and fresh.ejections == 1


def test_out_reasons_in_order_of_precedence() -> None:
    now = time.monotonic()
    assert out_reason(Instance("http://h:1", state="draining"), now) == "draining"
    assert out_reason(Instance("http://h:1", state="starting"), now) == "starting"
    assert out_reason(Instance("http://h:1", state="unhealthy"), now) == "unhealthy"
    probe = Instance("http://h:1", state="unhealthy", reason="generation_probe_failed")
    assert out_reason(probe, now) == "generation_probe_failed"
    odd = Instance("http://h:1", state="unhealthy", reason="anything else")  # bounded label set
    assert out_reason(odd, now) == "unhealthy"
    inst = Instance("http://h:1", state="healthy")
    assert out_reason(inst, now) is None
    inst.on_failure(connect=True)
    assert out_reason(inst, now) == "unreachable"
    inst = Instance("http://h:1", state="healthy", breaker_failures=1)
    inst.on_failure()
    assert inst.circuit is OPEN and out_reason(inst, time.monotonic()) == "circuit_open"
    assert {"draining", "stalled", "circuit_open", "generation_probe_failed"} <= set(OUT_REASONS)


def test_timeouts_per_model_fall_back_to_router_and_older_names() -> None:
    s = settings(
        timeouts={"read": 50, "total": 70, "first_token_s": 9, "models": {"big": {"response_s": 900}}}
    )
    assert s.timeouts.for_model("small") == (9, 50, 70, True)
    assert s.timeouts.for_model("big") == (9, 50, 900, True)
    s = settings(timeouts={"retry_on_timeout": False, "models": {"x": {"retry_on_timeout": True}}})
    assert s.timeouts.for_model("y")[3] is False and s.timeouts.for_model("x")[3] is True


def test_counter_sum_reads_every_sample_of_one_name() -> None:
    from corral.sitter.genprobe import counter_sum

    text = (
        "# TYPE vllm:request_success_total counter\n"
        'vllm:request_success_total{finished_reason="stop"} 3.0\n'
        'vllm:request_success_total{finished_reason="length"} 2\n'
        "vllm:request_success_totally_else 9\n"
    )
    assert counter_sum(text, "vllm:request_success_total") == 5.0
    assert counter_sum(text, "missing") is None
