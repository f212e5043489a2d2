"""The sitter's ``/metrics``: its engine's own Prometheus metrics plus the sitter's, labelled.

vLLM, SGLang (``--enable-metrics``) and llama-server (``--metrics``) serve Prometheus text on the
backend port's ``/metrics``; the sitter fetches it on each scrape and re-exposes it on port+1 with
``service``, ``replica`` and ``host`` labels, so that one scrape config (or the launcher's union)
tells the replicas apart. An engine without metrics, or one that is down, costs nothing but
``corral_sitter_engine_metrics_up 0``.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import aiohttp
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from corral import promtext
from corral.proc.events import State

if TYPE_CHECKING:
    from corral.sitter.runner import Sitter

ENGINE_METRICS_PATH = "/metrics"
SCRAPE_TIMEOUT_S = 5.0

# Every metric the sitter itself exports (tests and deploy/grafana check names against this).
SITTER_METRICS = (
    "corral_sitter_backend_up",
    "corral_sitter_backend_restarts_total",
    "corral_sitter_engine_metrics_up",
)


def labels(sitter: Sitter) -> dict[str, str]:
    """``service`` (the backend's service), ``replica`` (its index), ``host`` (this machine)."""
    cfg = sitter.cfg
    return {
        "service": cfg.service or cfg.service_name,
        "replica": str(cfg.replica),
        "host": socket.gethostname(),
    }


async def engine_metrics(url: str) -> list[Metric] | None:
    """The families at ``url``, or None when it does not answer 200 with valid text format."""
    try:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            if resp.status != 200:
                return None
            return promtext.parse(await resp.text())
    except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError):
        return None


def own_metrics(sitter: Sitter, engine_up: bool) -> list[Metric]:
    """The sitter's view of its backend."""
    sup = sitter.supervisor
    up = GaugeMetricFamily("corral_sitter_backend_up", "1 while the sitter's backend is healthy.")
    up.add_metric([], 1.0 if sup.state == State.HEALTHY else 0.0)
    restarts = CounterMetricFamily(
        "corral_sitter_backend_restarts", "Times the sitter restarted its backend (crash, probe, admin)."
    )
    restarts.add_metric([], float(sup.restarts))
    scraped = GaugeMetricFamily(
        "corral_sitter_engine_metrics_up", "1 when the engine's own /metrics answered this scrape."
    )
    scraped.add_metric([], 1.0 if engine_up else 0.0)
    return [up, restarts, scraped]


async def scrape(sitter: Sitter) -> bytes:
    """Prometheus text of the sitter's and its engine's metrics, labelled."""
    engine = await engine_metrics(sitter.backend_url + ENGINE_METRICS_PATH)
    families = own_metrics(sitter, engine is not None) + (engine or [])
    return promtext.render(promtext.merge(promtext.with_labels(families, labels(sitter))))
