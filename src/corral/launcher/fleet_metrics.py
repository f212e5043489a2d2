"""The launcher's ``/metrics``: one scrape target for the whole fleet it runs.

The union of the router's ``/metrics``, every sitter's (each carrying its engine's metrics with
``service``/``replica``/``host`` labels, see corral.sitter.metrics) and the launcher's own GPU
gauges, fetched concurrently on each scrape and merged into valid text format (corral.promtext).
``corral_fleet_scrape_up{target}`` says which source answered.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from corral import promtext
from corral.config import Plan
from corral.launcher.http_client import session

SCRAPE_TIMEOUT_S = 5.0
_WILDCARDS = ("", "0.0.0.0", "::")


def targets(plan: Plan) -> dict[str, str]:
    """Source name -> metrics URL: the router and each sitter (port+1) of ``plan``."""
    host = "127.0.0.1" if plan.host in _WILDCARDS else plan.host
    host = f"[{host}]" if ":" in host else host
    out: dict[str, str] = {}
    router = plan.get("router")
    if router is not None and router.kind == "router" and "api" in router.ports:
        out["router"] = f"{plan.scheme}://{host}:{router.ports['api']}/metrics"
    for p in plan.processes:
        if p.kind == "sitter" and "sitter" in p.ports:
            out[p.name] = f"{plan.scheme}://{host}:{p.ports['sitter']}/metrics"
    return out


async def _fetch(session: aiohttp.ClientSession, url: str) -> list[Metric] | None:
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                return None
            return promtext.parse(await resp.text())
    except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError):
        return None


async def union(plan: Plan, gpu_registry: Any) -> bytes:
    """Prometheus text of the router, the sitters (and engines) and the GPUs of ``plan``."""
    sources = targets(plan)
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
    async with session(plan.client_ssl(), timeout=timeout) as http:
        results = await asyncio.gather(*(_fetch(http, url) for url in sources.values()))
    gpu = await asyncio.to_thread(lambda: list(gpu_registry.collect()))
    up = GaugeMetricFamily(
        "corral_fleet_scrape_up", "1 when the launcher's scrape of this source answered.", labels=["target"]
    )
    for name, fams in zip(sources, results, strict=True):
        up.add_metric([name], 0.0 if fams is None else 1.0)
    return promtext.render(promtext.merge([up], gpu, *(r for r in results if r)))
