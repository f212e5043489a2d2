"""The dashboard's router summary: Prometheus parsing, quantiles, rates across scrapes."""

from __future__ import annotations

import math

import pytest

from corral.launcher.dashboard_api import Scrape, overview, parse_metrics, quantile, summarize

TEXT = """\
# TYPE corral_router_requests counter
corral_router_requests_total{model="a",instance="http://127.0.0.1:1",status="200"} 10.0
corral_router_requests_total{model="b",instance="http://127.0.0.1:2",status="500"} 2.0
# TYPE corral_router_request_duration_seconds histogram
corral_router_request_duration_seconds_bucket{model="a",le="0.1"} 4.0
corral_router_request_duration_seconds_bucket{model="a",le="1.0"} 10.0
corral_router_request_duration_seconds_bucket{model="a",le="+Inf"} 10.0
corral_router_request_duration_seconds_sum{model="a"} 3.0
corral_router_request_duration_seconds_count{model="a"} 10.0
corral_router_request_duration_seconds_bucket{model="b",le="0.1"} 2.0
corral_router_request_duration_seconds_bucket{model="b",le="1.0"} 2.0
corral_router_request_duration_seconds_bucket{model="b",le="+Inf"} 2.0
corral_router_request_duration_seconds_sum{model="b"} 0.1
corral_router_request_duration_seconds_count{model="b"} 2.0
# TYPE corral_router_completion_tokens counter
corral_router_completion_tokens_total{model="a"} 50.0
# TYPE corral_router_in_flight gauge
corral_router_in_flight{instance="http://127.0.0.1:1"} 3.0
# TYPE corral_router_instance_healthy gauge
corral_router_instance_healthy{instance="http://127.0.0.1:1"} 1.0
# TYPE corral_router_circuit_state gauge
corral_router_circuit_state{instance="http://127.0.0.1:1"} 2.0
# TYPE corral_router_instance_out gauge
corral_router_instance_out{instance="http://127.0.0.1:1",reason="stalled"} 0.0
corral_router_instance_out{instance="http://127.0.0.1:1",reason="circuit_open"} 1.0
# TYPE corral_router_instance_stalls counter
corral_router_instance_stalls_total{instance="http://127.0.0.1:1"} 4.0
"""


def test_parse_sums_models_and_reads_instance_gauges() -> None:
    s = parse_metrics(TEXT, t=100.0)
    assert s.requests == 12
    assert s.completion_tokens == 50
    assert s.buckets == {0.1: 6.0, 1.0: 12.0, math.inf: 12.0}
    assert s.instances == {
        "http://127.0.0.1:1": {
            "in_flight": 3,
            "healthy": True,
            "circuit": "open",
            "out_reason": "circuit_open",
            "stalls": 4,
        }
    }


def test_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    buckets = {0.1: 6.0, 1.0: 12.0, math.inf: 12.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.1 + 0.9 * 3 / 6)
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert quantile(0.99, {0.1: 0.0, math.inf: 5.0}) == 0.1  # all beyond the last bound


def test_summarize_gives_rates_between_scrapes_and_survives_a_router_restart() -> None:
    a = Scrape(t=0.0, requests=10, completion_tokens=100, buckets={0.1: 10.0, math.inf: 10.0})
    b = Scrape(t=2.0, requests=14, completion_tokens=180, buckets={0.1: 10.0, 1.0: 14.0, math.inf: 14.0})
    row = summarize(a, b)
    assert row["rps"] == pytest.approx(2.0)
    assert row["tokens_per_s"] == pytest.approx(40.0)
    assert 100 < row["p50_ms"] <= 1000  # only the 4 new requests count, all in (0.1, 1.0]
    restarted = Scrape(t=4.0, requests=3, completion_tokens=6, buckets={0.1: 3.0, math.inf: 3.0})
    row = summarize(b, restarted)
    assert row["rps"] == pytest.approx(1.5)
    assert row["tokens_per_s"] == pytest.approx(3.0)
    assert row["p99_ms"] is not None and row["p99_ms"] <= 100


def test_overview_groups_registry_instances_by_model_and_keeps_static_workers() -> None:
    backends = [
        {"url": "http://h:1", "service": "chat-0", "state": "healthy", "models": ["m1", "m2"]},
        {"url": "http://h:2", "service": "chat-1", "state": "starting", "models": ["m1"]},
    ]
    gauges = {
        "http://h:1": {"healthy": True, "circuit": "closed", "in_flight": 2},
        "http://s:9": {"healthy": False},
    }
    doc = overview(backends, gauges)
    by = {m["name"]: m["instances"] for m in doc["models"]}
    assert [i["url"] for i in by["m1"]] == ["http://h:1", "http://h:2"]
    assert by["m1"][0]["in_flight"] == 2 and by["m1"][1]["healthy"] is False
    assert by["(static)"] == [{"url": "http://s:9", "routed": True, "healthy": False}]
