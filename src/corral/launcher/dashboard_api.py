"""Router views for the dashboard: a metrics summary over time and models -> instances.

``GET /api/router/stats`` scrapes the router's Prometheus ``/metrics`` (at most once per
``interval_s``, only while someone asks, so an unwatched dashboard costs nothing) and answers
request rate, p50/p99 latency and tokens/s per interval for the last ``window_s`` seconds, and,
when the router has API keys, per key: in flight, queued and tokens/minute (over the last 60 s of
scrapes; key names only, from the ``corral_router_key_*`` and ``queue_depth`` families).
``GET /api/router`` joins the registry's backend instances (which models each serves) with the
router's per-instance gauges (health, circuit, in flight).

The launcher mounts it with ``app.include_router(dashboard_router(router_url, registry_url))``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any

import aiohttp
from fastapi import APIRouter, params
from fastapi.responses import JSONResponse
from prometheus_client.parser import text_string_to_metric_families

from corral.errors import error_body
from corral.launcher.http_client import session

_CIRCUIT = {0: "closed", 1: "half_open", 2: "open"}
_GAUGES = (
    "corral_router_in_flight",
    "corral_router_instance_healthy",
    "corral_router_circuit_state",
    "corral_router_instance_out",
    "corral_router_instance_stalls_total",
)
_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


@dataclass
class Scrape:
    """The router counters that matter to the dashboard, summed over models, at one instant."""

    t: float
    requests: float = 0.0
    completion_tokens: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)  # url -> gauges
    keys: dict[str, dict[str, float]] = field(default_factory=dict)  # key name -> in_flight, queued, tokens


def parse_metrics(text: str, t: float) -> Scrape:
    """Sum the router's Prometheus text into one :class:`Scrape` taken at time ``t``."""
    s = Scrape(t=t)
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "corral_router_requests_total":
                s.requests += value
            elif name == "corral_router_completion_tokens_total":
                s.completion_tokens += value
            elif name == "corral_router_request_duration_seconds_bucket":
                le = float(labels["le"])
                s.buckets[le] = s.buckets.get(le, 0.0) + value
            elif name.startswith(_KEY_FAMILIES):
                _key_sample(s, name, labels, value)
            elif name in _GAUGES:
                inst = s.instances.setdefault(labels.get("instance", ""), {})
                if name == "corral_router_in_flight":
                    inst["in_flight"] = int(value)
                elif name == "corral_router_instance_healthy":
                    inst["healthy"] = value >= 1
                elif name == "corral_router_instance_out":
                    if value >= 1:  # one sample per possible reason; the one set to 1 is why
                        inst["out_reason"] = labels.get("reason")
                elif name == "corral_router_instance_stalls_total":
                    inst["stalls"] = int(value)
                else:
                    inst["circuit"] = _CIRCUIT.get(int(value), str(int(value)))
    return s


_KEY_FAMILIES = (
    "corral_router_key_in_flight",
    "corral_router_queue_depth",
    "corral_router_key_prompt_tokens_total",
    "corral_router_key_completion_tokens_total",
)


def _key_sample(s: Scrape, name: str, labels: dict[str, str], value: float) -> None:
    key = labels.get("key", "")
    if not key or key == "-":  # "-": queued without keys
        return
    row = s.keys.setdefault(key, {"in_flight": 0.0, "queued": 0.0, "tokens": 0.0})
    if name == "corral_router_key_in_flight":
        row["in_flight"] = value
    elif name == "corral_router_queue_depth":
        row["queued"] += value
    else:
        row["tokens"] += value


def key_rows(history: Sequence[Scrape]) -> list[dict[str, Any]]:
    """Per key of the newest scrape: in flight, queued, and tokens/minute since the oldest one."""
    if not history:
        return []
    old, new = history[0], history[-1]
    dt = new.t - old.t
    rows = []
    for name, now in sorted(new.keys.items()):
        before = old.keys.get(name, {}).get("tokens", 0.0)
        spent = now["tokens"] - before if now["tokens"] >= before else now["tokens"]  # reset: restart
        rows.append(
            {
                "name": name,
                "in_flight": int(now["in_flight"]),
                "queued": int(now["queued"]),
                "tokens_per_minute": spent * 60 / dt if dt > 0 else None,
            }
        )
    return rows


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative ``buckets`` (bound -> count); None when empty."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if b == float("inf"):
                return prev_bound  # beyond the last finite bound: the best we know
            if count == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = b, count
    return prev_bound


def summarize(a: Scrape, b: Scrape) -> dict[str, Any]:
    """Rates and latency quantiles between two scrapes (counters that went down mean a restart)."""
    dt = max(b.t - a.t, 1e-6)
    reset = b.requests < a.requests
    base_req = 0.0 if reset else a.requests
    base_tok = 0.0 if reset or b.completion_tokens < a.completion_tokens else a.completion_tokens
    delta = {le: n - (0.0 if reset else a.buckets.get(le, 0.0)) for le, n in b.buckets.items()}
    p50, p99 = quantile(0.5, delta), quantile(0.99, delta)
    return {
        "t": b.t,
        "rps": (b.requests - base_req) / dt,
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
        "tokens_per_s": (b.completion_tokens - base_tok) / dt,
        "in_flight": sum(i.get("in_flight", 0) for i in b.instances.values()),
    }


class RouterStats:
    """Scrapes the router on demand and keeps a window of per-interval summaries."""

    def __init__(
        self,
        router_url: str,
        *,
        interval_s: float = 2.0,
        window_s: float = 600.0,
        ssl: SSLContext | None = None,
    ) -> None:
        self.metrics_url = router_url.rstrip("/") + "/metrics"
        self.ssl = ssl
        self.interval_s = interval_s
        self.window_s = window_s
        self.samples: deque[dict[str, Any]] = deque(maxlen=max(2, int(window_s / interval_s) + 1))
        self.last: Scrape | None = None
        self.recent: deque[Scrape] = deque()  # the last minute of scrapes (tokens/minute per key)
        self.error: str | None = None
        self._lock = asyncio.Lock()

    async def scrape(self) -> Scrape | None:
        """Fetch and parse ``/metrics`` once; None (and ``error`` set) when the router is away."""
        try:
            async with (
                session(self.ssl, timeout=_TIMEOUT) as http,
                http.get(self.metrics_url) as resp,
            ):
                if resp.status != 200:
                    self.error = f"{self.metrics_url}: HTTP {resp.status}"
                    return None
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.error = f"{self.metrics_url}: {exc or type(exc).__name__}"
            return None
        self.error = None
        return parse_metrics(text, time.time())

    async def refresh(self) -> None:
        """Scrape when the last scrape is older than ``interval_s``; concurrent callers share one."""
        async with self._lock:
            if self.last is not None and time.time() - self.last.t < self.interval_s * 0.9:
                return
            now = await self.scrape()
            if now is None:
                return
            if self.last is not None:
                self.samples.append(summarize(self.last, now))
            self.last = now
            self.recent.append(now)
            while len(self.recent) > 2 and self.recent[1].t <= now.t - 60:
                self.recent.popleft()
            horizon = now.t - self.window_s
            while self.samples and self.samples[0]["t"] < horizon:
                self.samples.popleft()

    def document(self) -> dict[str, Any]:
        """The ``/api/router/stats`` answer."""
        return {
            "metrics_url": self.metrics_url,
            "interval_s": self.interval_s,
            "window_s": self.window_s,
            "error": self.error,
            "samples": list(self.samples),
            "keys": key_rows(self.recent),
        }


async def _registry_backends(
    registry_url: str, token: str | None, kind: str = "backend", ssl: SSLContext | None = None
) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = registry_url.split(",")[0].rstrip("/") + f"/v1/instances?kind={kind}"  # a,b: the first
    try:
        async with (
            session(ssl, timeout=_TIMEOUT) as http,
            http.get(url, headers=headers) as resp,
        ):
            if resp.status != 200:
                return []
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return []
    data = body.get("data", []) if isinstance(body, dict) else []
    return [i for i in data if isinstance(i, dict)]


def overview(
    backends: list[dict[str, Any]],
    gauges: dict[str, dict[str, Any]],
    on_demand: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``{"models": [{"name", "instances": [{url, service, state, healthy, circuit, in_flight,
    out_reason, stalls}]}]}``.

    Instances the router knows but the registry does not (static workers) are listed under
    the model ``"(static)"`` so nothing routable is hidden. On-demand models (registry entries of
    kind ``model``) are listed even while stopped, with ``on_demand``, ``state`` and ``reason``.
    """
    models: dict[str, list[dict[str, Any]]] = {}
    states: dict[str, dict[str, Any]] = {}
    for entry in on_demand or []:
        meta = entry.get("metadata") or {}
        for model in entry.get("models") or []:
            models.setdefault(str(model), [])
            state, reason = entry.get("state"), meta.get("reason")
            states[str(model)] = {"on_demand": True, "state": state, "reason": reason}
    seen: set[str] = set()
    for inst in backends:
        url = str(inst.get("url", "")).rstrip("/")
        g = gauges.get(url) or gauges.get(url + "/") or {}
        seen.add(url)
        row = {
            "url": url,
            "service": inst.get("service"),
            "state": inst.get("state"),
            "healthy": g.get("healthy", inst.get("state") == "healthy"),
            "circuit": g.get("circuit"),
            "in_flight": g.get("in_flight", 0),
            "out_reason": g.get("out_reason"),
            "stalls": g.get("stalls", 0),
            "routed": bool(g),
        }
        for model in inst.get("models") or []:
            models.setdefault(str(model), []).append(row)
    for url, g in gauges.items():
        if url.rstrip("/") not in seen:
            models.setdefault("(static)", []).append({"url": url, "routed": True, **g})
    return {
        "models": [{"name": m, "instances": rows, **states.get(m, {})} for m, rows in sorted(models.items())]
    }


def dashboard_router(
    router_url: str,
    registry_url: str | None = None,
    *,
    registry_token: str | None = None,
    interval_s: float = 2.0,
    window_s: float = 600.0,
    include_overview: bool = True,
    dependencies: Sequence[params.Depends] | None = None,
    ssl: SSLContext | None = None,
) -> APIRouter:
    """FastAPI routes ``GET /api/router/stats`` (and ``GET /api/router`` when ``include_overview``).

    ``dependencies`` carries the launcher's auth check when reads need the control token.
    """
    stats = RouterStats(router_url, interval_s=interval_s, window_s=window_s, ssl=ssl)
    api = APIRouter(prefix="/api/router", tags=["dashboard"], dependencies=list(dependencies or []))

    @api.get("/stats")
    async def router_stats() -> JSONResponse:
        """Request rate, p50/p99 latency and tokens/s per interval over the recent window."""
        await stats.refresh()
        return JSONResponse(stats.document())

    if include_overview:

        @api.get("")
        async def router_overview() -> JSONResponse:
            """Models and, for each, its instances with health, circuit state and in-flight count."""
            await stats.refresh()
            if stats.last is None and registry_url is None:
                return JSONResponse(error_body(stats.error or "router unreachable", 503), status_code=503)
            backends: list[dict[str, Any]] = []
            entries: list[dict[str, Any]] = []
            if registry_url:
                backends, entries = await asyncio.gather(
                    _registry_backends(registry_url, registry_token, ssl=ssl),
                    _registry_backends(registry_url, registry_token, "model", ssl=ssl),
                )
            gauges = stats.last.instances if stats.last is not None else {}
            return JSONResponse({**overview(backends, gauges, entries), "error": stats.error})

    return api
