"""corral.promtext: labels added, sources merged, and the result still valid Prometheus text."""

from __future__ import annotations

import pytest

from corral import promtext

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="qwen"} 120.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="qwen"} 2.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="qwen"} 3.0
vllm:e2e_request_latency_seconds_sum{model_name="qwen"} 4.5
vllm:e2e_request_latency_seconds_count{model_name="qwen"} 3.0
"""


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in promtext.parse(text.decode())
        for s in f.samples
    }


def test_labels_are_added_to_every_sample_and_clashes_kept_as_exported() -> None:
    fams = promtext.parse(VLLM + 'other{host="engine-side"} 1\n')
    text = promtext.render(promtext.with_labels(fams, {"service": "qwen", "replica": "1", "host": "gpu7"}))
    samples = _samples(text)
    ours = {"host": "gpu7", "replica": "1", "service": "qwen"}

    def key(name: str, **own: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted({**own, **ours}.items()))

    assert samples[key("vllm:prompt_tokens_total", engine="0", model_name="qwen")] == 120
    assert samples[key("vllm:e2e_request_latency_seconds_count", model_name="qwen")] == 3
    assert samples[key("other", exported_host="engine-side")] == 1
    assert len(samples) == 7


def test_two_replicas_merge_under_one_family() -> None:
    one = promtext.with_labels(promtext.parse(VLLM), {"replica": "0"})
    two = promtext.with_labels(promtext.parse(VLLM), {"replica": "1"})
    text = promtext.render(promtext.merge(one, two)).decode()
    assert text.count("# TYPE vllm:num_requests_running gauge") == 1
    assert text.count("# TYPE vllm:e2e_request_latency_seconds histogram") == 1
    assert len(_samples(text.encode())) == 12  # valid text: it parses back, every sample kept


def test_merge_drops_a_clashing_type_and_duplicate_samples() -> None:
    gauge = promtext.parse("# TYPE x gauge\nx 1\n")
    counter = promtext.parse("# TYPE x_total counter\nx_total 5\n")
    same = promtext.parse("# TYPE x gauge\nx 2\n")
    text = promtext.render(promtext.merge(gauge, counter, same))
    assert _samples(text) == {("x", ()): 1}


def test_invalid_text_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        promtext.parse("not a metric line at all {{{\n")
