"""Prometheus view of the GPUs: memory per GPU and per service, utilisation.

A custom collector, so each scrape reads the inventory once and nothing runs between scrapes.
Memory held by processes outside every corral service is exported with ``service="other"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.gpu.attribution import Attribution, attribute
from corral.gpu.inventory import Inventory, read_inventory

OTHER = "other"

Services = Callable[[], Mapping[str, int | Iterable[int]]]


class GpuCollector(Collector):
    """``corral_gpu_*`` gauges from ``inventory()``, attributed to ``services()`` (name -> root PIDs)."""

    def __init__(
        self,
        services: Services | None = None,
        inventory: Callable[[], Inventory] = read_inventory,
    ) -> None:
        self._services = services or dict
        self._inventory = inventory

    def attribution(self) -> Attribution:
        """The attribution one scrape exports."""
        return attribute(self._inventory(), self._services())

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus_client on each scrape."""
        att = self.attribution()
        used = GaugeMetricFamily(
            "corral_gpu_memory_used_bytes", "GPU memory held, per GPU and service", labels=["gpu", "service"]
        )
        free = GaugeMetricFamily("corral_gpu_memory_free_bytes", "GPU memory free", labels=["gpu"])
        total = GaugeMetricFamily("corral_gpu_memory_total_bytes", "GPU memory in all", labels=["gpu"])
        util = GaugeMetricFamily("corral_gpu_utilization_percent", "GPU utilisation (NVML)", labels=["gpu"])
        for g in att.gpus:
            gpu = str(g.index)
            by_service: dict[str, int] = {}
            for h in g.holders:
                key = h.service if h.service is not None else OTHER
                by_service[key] = by_service.get(key, 0) + h.used_memory
            for service, n in sorted(by_service.items()):
                used.add_metric([gpu, service], n)
            free.add_metric([gpu], g.memory_free)
            total.add_metric([gpu], g.memory_total)
            if g.utilization_percent is not None:
                util.add_metric([gpu], g.utilization_percent)
        yield from (used, free, total, util)


def register_gpu_metrics(
    registry: CollectorRegistry,
    services: Services | None = None,
    inventory: Callable[[], Inventory] = read_inventory,
) -> GpuCollector:
    """Add a :class:`GpuCollector` to ``registry`` and return it."""
    collector = GpuCollector(services, inventory)
    registry.register(collector)
    return collector
