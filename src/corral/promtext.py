"""Prometheus text from other processes: parse, add labels, merge several sources, render.

The sitter re-exposes its engine's ``/metrics`` with ``service``, ``replica`` and ``host`` labels;
the launcher serves the union of the router's, every sitter's and its own GPU metrics on one
endpoint. Both go through prometheus-client's parser and renderer, so the output is valid text
format even when two sources export the same family (their samples are merged under one
``# HELP``/``# TYPE``). Counters come out named ``*_total`` (the parser's OpenMetrics model).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse(text: str) -> list[Metric]:
    """The metric families in Prometheus ``text``; ValueError when it is not valid text format."""
    return list(text_string_to_metric_families(text))


def with_labels(families: Iterable[Metric], labels: Mapping[str, str]) -> list[Metric]:
    """``families`` with ``labels`` added to every sample. A source's own label of the same name is
    kept as ``exported_<name>`` (Prometheus' convention for a target's clashing labels)."""
    out = []
    for fam in families:
        copy = Metric(fam.name, fam.documentation, fam.type, fam.unit)
        for s in fam.samples:
            own = {(f"exported_{k}" if k in labels else k): v for k, v in s.labels.items()}
            copy.samples.append(s._replace(labels={**labels, **own}))
        out.append(copy)
    return out


def merge(*sources: Iterable[Metric]) -> list[Metric]:
    """One family per name, samples in source order; the first source's help and type win.

    A later family of the same name but another type is dropped (the text format cannot hold
    both); duplicate samples (same name and labels) keep the first.
    """
    merged: dict[str, Metric] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for source in sources:
        for fam in source:
            into = merged.get(fam.name)
            if into is None:
                into = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            elif into.type != fam.type:
                continue
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if key not in seen:
                    seen.add(key)
                    into.samples.append(s)
    return list(merged.values())


class _Fixed:
    """A collector that yields what it was given (``describe`` empty: no collect on register)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render(families: list[Metric]) -> bytes:
    """Prometheus text format (version 0.0.4) of ``families``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))  # type: ignore[arg-type]
    return generate_latest(registry)
