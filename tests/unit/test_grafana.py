"""deploy/grafana/corral.json queries only metrics that corral or a named engine exports."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

from prometheus_client.metrics_core import Metric

from corral import promtext
from corral.gpu.inventory import Inventory
from corral.gpu.metrics import GpuCollector
from corral.router.metrics import Metrics, make_renderer
from corral.router.pool import Pool
from corral.sitter.metrics import SITTER_METRICS
from deploy_support import DEPLOY

GRAFANA = DEPLOY / "grafana"
# PromQL words that are not metric names (functions, aggregations, keywords).
PROMQL = {
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "rate", "irate", "increase", "delta",
    "histogram_quantile", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "vector", "clamp_min", "clamp_max", "abs", "label_values", "time", "offset", "bool",
}  # fmt: skip
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


def _sample_names(families: list[Metric]) -> set[str]:
    names: set[str] = set()
    for f in families:
        names.update(f.name + s for s in _SUFFIXES.get(f.type, ("",)))
    return names


def corral_metrics() -> set[str]:
    """Every sample name corral's router, sitters, launcher and GPU collector export."""
    # A real (empty) pool; the tenants' families need only their (empty) usage and key states.
    tenants = SimpleNamespace(usage=SimpleNamespace(totals={}), keyring=SimpleNamespace(states={}))
    router = promtext.parse(make_renderer(Metrics(), Pool(), tenants)().decode())  # type: ignore[arg-type]
    gpu = list(GpuCollector(inventory=lambda: Inventory(gpus=[], source="none")).collect())
    return _sample_names(router) | _sample_names(gpu) | set(SITTER_METRICS) | {"corral_fleet_scrape_up"}


def engine_metrics() -> dict[str, set[str]]:
    """Engine -> the sample names of its documented metrics (deploy/grafana/engine-metrics.json)."""
    doc = json.loads((GRAFANA / "engine-metrics.json").read_text())
    out = {}
    for engine, spec in doc.items():
        if engine.startswith("_"):
            continue
        names = set()
        for name, kind in spec["metrics"].items():
            assert kind in ("gauge", "counter", "histogram"), f"{engine} {name}: {kind}"
            assert kind != "counter" or name.endswith("_total"), f"{engine} {name}"
            names.update(name + s for s in _SUFFIXES.get(kind, ("",))) if kind == "histogram" else names.add(
                name
            )
        out[engine] = names
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges and strings removed)."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
    words = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare)
    return {w for w in words if w not in PROMQL}


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append(query.replace("label_values(", "").split(",")[0])
    return exprs


def test_metric_name_extraction() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, model) (rate(corral_router_ttft_seconds_bucket{a="b"}[5m])))'
    assert metric_names(expr) == {"corral_router_ttft_seconds_bucket"}
    assert metric_names("count(vllm:x == 2) or vector(0)") == {"vllm:x"}


def test_every_queried_metric_is_exported() -> None:
    dashboard = json.loads((GRAFANA / "corral.json").read_text())
    known = corral_metrics()
    engines = engine_metrics()
    for names in engines.values():
        known |= names
    queried = set().union(*(metric_names(e) for e in _exprs(dashboard)))
    assert queried - known == set(), f"queried but exported by neither corral nor {sorted(engines)}"
    # The dashboard covers what the issue asks for: router, engines (each named one) and GPUs.
    assert any(n.startswith("corral_router_") for n in queried)
    assert any(n.startswith("corral_gpu_") for n in queried)
    assert any(n.startswith("corral_sitter_") for n in queried)
    for engine, names in engines.items():
        assert queried & names, f"no panel reads {engine}'s metrics"


def test_dashboard_shape() -> None:
    dashboard = json.loads((GRAFANA / "corral.json").read_text())
    assert dashboard["uid"] == "corral-fleet"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]


def test_the_mock_exports_the_vllm_names_it_claims() -> None:
    """The engine-like mock stands in for vLLM in tests: its names are in the documented list."""
    from corral.mock.engine import Engine, EngineConfig

    text = "\n".join(Engine(EngineConfig()).prometheus("m")) + "\n"
    names = _sample_names(promtext.parse(text))
    assert names and names <= engine_metrics()["vllm"]
