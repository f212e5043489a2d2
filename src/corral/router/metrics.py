"""Router metrics: plain counters on the hot path, Prometheus text only when scraped.

Recording is a dict lookup and an integer add (no locks: everything runs on one event loop).
Histograms count by ``bisect`` into int lists. A custom collector turns it all into Prometheus
families at scrape time, together with live gauges read from the pool.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from corral.router.instance import CLOSED, HALF_OPEN, OPEN, OUT_REASONS, out_reason
from corral.router.ondemand import STATES, OnDemand
from corral.router.pool import Pool

if TYPE_CHECKING:
    from corral.router.tenants import Tenants

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_CIRCUIT = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
# The label of errors about a model no instance serves: clients choose those names, and each
# distinct label value is a time series kept forever (unbounded cardinality).
UNKNOWN_MODEL = "unknown"


class Histogram:
    """Fixed-bucket histogram: per-bucket counts plus a running sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (seconds)."""
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.total += value


class Metrics:
    """All counters of one router process."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.ttft: dict[str, Histogram] = {}
        self.prompt_tokens: dict[str, int] = {}
        self.completion_tokens: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.prefill_waits: dict[str, int] = {}
        self.errors: dict[tuple[str, int], int] = {}  # answered by the router itself
        self.queue_waits: dict[tuple[str, str], Histogram] = {}  # (model, key name)
        self.refusals: dict[tuple[str, str], int] = {}  # (key name, code): 401s have no key

    def request(self, model: str, instance: str, status: int, seconds: float) -> None:
        """One proxied request finished with ``status`` after ``seconds``."""
        key = (model, instance, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        h = self.latency.get(model)
        if h is None:
            h = self.latency[model] = Histogram()
        h.observe(seconds)

    def first_token(self, model: str, seconds: float) -> None:
        """Time from request arrival to the first streamed byte."""
        h = self.ttft.get(model)
        if h is None:
            h = self.ttft[model] = Histogram()
        h.observe(seconds)

    def usage(self, model: str, prompt: int, completion: int) -> None:
        """Token counts read from the response's usage."""
        self.prompt_tokens[model] = self.prompt_tokens.get(model, 0) + prompt
        self.completion_tokens[model] = self.completion_tokens.get(model, 0) + completion

    def retry(self, model: str) -> None:
        """One more attempt on another instance."""
        self.retries[model] = self.retries.get(model, 0) + 1

    def prefill_wait(self, model: str) -> None:
        """A request waited for its prefix's prefill in flight on its instance (cache_aware)."""
        self.prefill_waits[model] = self.prefill_waits.get(model, 0) + 1

    def error(self, model: str, status: int) -> None:
        """A request the router answered itself with an error status."""
        key = (model, status)
        self.errors[key] = self.errors.get(key, 0) + 1

    def queue_wait(self, model: str, key: str, seconds: float) -> None:
        """A request waited ``seconds`` in ``model``'s queue (served or timed out)."""
        h = self.queue_waits.get((model, key))
        if h is None:
            h = self.queue_waits[(model, key)] = Histogram()
        h.observe(seconds)

    def refused(self, key: str, code: str) -> None:
        """A key's request refused by its scope or limits (403/429)."""
        k = (key, code)
        self.refusals[k] = self.refusals.get(k, 0) + 1


def _histogram(h: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    acc, buckets = 0, []
    for bound, n in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
        acc += n
        buckets.append(("+Inf" if bound == float("inf") else str(bound), acc))
    h.add_metric(labels, buckets, hist.total)


class _Collector:
    def __init__(
        self, metrics: Metrics, pool: Pool, tenants: Tenants | None, ondemand: OnDemand | None = None
    ) -> None:
        self.m = metrics
        self.pool = pool
        self.tenants = tenants
        self.ondemand = ondemand

    def collect(self) -> Iterator[Any]:
        m = self.m
        c = CounterMetricFamily(
            "corral_router_requests", "Proxied requests by outcome.", labels=["model", "instance", "status"]
        )
        for (model, url, status), n in list(m.requests.items()):
            c.add_metric([model, url, str(status)], n)
        yield c
        c = CounterMetricFamily(
            "corral_router_errors", "Requests the router answered with an error.", labels=["model", "status"]
        )
        for (model, status), n in list(m.errors.items()):
            c.add_metric([model, str(status)], n)
        yield c
        for name, doc, data in (
            ("corral_router_request_duration_seconds", "Request latency.", m.latency),
            ("corral_router_ttft_seconds", "Time to first streamed byte.", m.ttft),
        ):
            h = HistogramMetricFamily(name, doc, labels=["model"])
            for model, hist in list(data.items()):
                _histogram(h, [model], hist)
            yield h
        for name, doc, data2 in (
            ("corral_router_prompt_tokens", "Prompt tokens from usage.", m.prompt_tokens),
            ("corral_router_completion_tokens", "Completion tokens from usage.", m.completion_tokens),
            ("corral_router_retries", "Attempts retried on another instance.", m.retries),
            (
                "corral_router_prefill_waits",
                "Requests that waited for their prefix's prefill in flight on their instance.",
                m.prefill_waits,
            ),
        ):
            c = CounterMetricFamily(name, doc, labels=["model"])
            for model, n in list(data2.items()):
                c.add_metric([model], n)
            yield c
        inflight = GaugeMetricFamily("corral_router_in_flight", "Requests in flight.", labels=["instance"])
        healthy = GaugeMetricFamily("corral_router_instance_healthy", "1 when routable.", labels=["instance"])
        circuit = GaugeMetricFamily(
            "corral_router_circuit_state", "0 closed, 1 half-open, 2 open.", labels=["instance"]
        )
        out = GaugeMetricFamily(
            "corral_router_instance_out",
            "1 for the reason an instance takes no new requests (one of a fixed set), else 0.",
            labels=["instance", "reason"],
        )
        stalls = CounterMetricFamily(
            "corral_router_instance_stalls", "Watchdog timeouts (stalls) per instance.", labels=["instance"]
        )
        ejections = CounterMetricFamily(
            "corral_router_instance_ejections",
            "Outlier ejections after repeated stalls.",
            labels=["instance"],
        )
        now = time.monotonic()
        for inst in list(self.pool.instances.values()):
            inflight.add_metric([inst.url], inst.outstanding)
            healthy.add_metric([inst.url], 1 if inst.healthy else 0)
            circuit.add_metric([inst.url], _CIRCUIT[inst.circuit])
            why = out_reason(inst, now)
            for reason in OUT_REASONS:
                out.add_metric([inst.url, reason], 1 if reason == why else 0)
            stalls.add_metric([inst.url], inst.stalls_total)
            ejections.add_metric([inst.url], inst.ejections)
        yield inflight
        yield healthy
        yield circuit
        yield out
        yield stalls
        yield ejections
        yield from self._queues()
        if self.tenants is not None:
            yield from self._keys(self.tenants)
        yield self._model_states()

    def _queues(self) -> Iterator[Any]:
        m = self.m
        depth = GaugeMetricFamily(
            "corral_router_queue_depth", "Requests waiting for a slot.", labels=["model", "key"]
        )
        for model, q in list(self.pool.waiters.items()):
            for key, n in q.depth_by_key().items():
                depth.add_metric([model, key or "-"], n)
        yield depth
        h = HistogramMetricFamily(
            "corral_router_queue_wait_seconds", "Time requests waited in the queue.", labels=["model", "key"]
        )
        for (model, key), hist in list(m.queue_waits.items()):
            _histogram(h, [model, key or "-"], hist)
        yield h

    def _keys(self, tenants: Tenants) -> Iterator[Any]:
        # Label values are key NAMES from the config (a bounded set), never keys or digests.
        m = self.m
        c = CounterMetricFamily(
            "corral_router_key_refused", "Requests refused by key scope or limits.", labels=["key", "code"]
        )
        for (key, code), n in list(m.refusals.items()):
            c.add_metric([key, code], n)
        yield c
        families = [
            CounterMetricFamily(name, doc, labels=["key", "model"])
            for name, doc in (
                ("corral_router_key_requests", "Answered requests with usage, per key."),
                ("corral_router_key_prompt_tokens", "Prompt tokens from usage, per key."),
                ("corral_router_key_completion_tokens", "Completion tokens from usage, per key."),
            )
        ]
        for (key, model), t in list(tenants.usage.totals.items()):
            for fam, n in zip(families, t, strict=True):
                fam.add_metric([key, model], n)
        yield from families
        g = GaugeMetricFamily("corral_router_key_in_flight", "Requests in flight, per key.", labels=["key"])
        for name, st in list(tenants.keyring.states.items()):
            g.add_metric([name], st.in_flight)
        yield g

    def _model_states(self) -> GaugeMetricFamily:
        """``corral_model_state{model,state}``: 1 for each model's current state, 0 for the others."""
        from corral.router.models_view import model_names, model_state

        g = GaugeMetricFamily(
            "corral_model_state", "1 for the model's current state.", labels=["model", "state"]
        )
        for name in model_names(self.pool, self.ondemand):
            if name in self.pool.aliases:
                continue
            st = model_state(self.pool, self.ondemand, name)
            cur = st["state"] if st else "stopped"
            for state in STATES:
                g.add_metric([name, state], 1 if state == cur else 0)
        return g


def make_renderer(
    metrics: Metrics, pool: Pool, tenants: Tenants | None = None, ondemand: OnDemand | None = None
) -> Any:
    """A function returning the Prometheus text exposition of ``metrics`` and ``pool``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics, pool, tenants, ondemand))  # type: ignore[arg-type]
    return lambda: generate_latest(registry)
