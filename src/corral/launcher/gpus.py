"""GPU views of the running fleet: which service holds which GPU memory (``corral status``,
``GET /api/services``, ``GET /api/gpus``) and the launcher's Prometheus ``GET /metrics``.

A service is named by its root PID; its whole process tree counts (a sitter's tree includes its
backend and the engine's workers), matched against the compute PIDs of ``read_inventory()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from corral.gpu import Attribution
    from corral.launcher.orchestrator import Orchestrator


def service_roots(orch: Orchestrator) -> dict[str, int]:
    """Process name -> root PID of every process running now."""
    return {name: sup.pid for name, sup in orch.sups.items() if sup.pid}


def attribution(orch: Orchestrator) -> Attribution | None:
    """The live inventory attributed to the fleet's processes; None when no GPU is visible."""
    from corral.gpu import attribute, read_inventory

    inv = read_inventory()
    if not inv.gpus:
        return None
    return attribute(inv, service_roots(orch))


def service_gpu_fields(att: Attribution | None, name: str) -> dict[str, Any]:
    """``gpu_memory_bytes`` and ``gpu_usage`` (GPU index -> bytes) of one process."""
    usage = att.services.get(name) if att is not None else None
    if usage is None:
        return {"gpu_memory_bytes": 0, "gpu_usage": {}}
    return {
        "gpu_memory_bytes": usage.memory_bytes,
        "gpu_usage": {str(i): n for i, n in sorted(usage.memory_by_gpu.items())},
    }


def gpus_doc(orch: Orchestrator) -> dict[str, Any]:
    """``GET /api/gpus``: per GPU total/used/free/util and every holder (foreign PIDs too), plus
    the GPUs each process was placed on."""
    from corral.gpu import attribute, read_inventory

    inv = read_inventory()
    att = attribute(inv, service_roots(orch))
    gpus = []
    for g in att.gpus:
        gpus.append(
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "memory_total": g.memory_total,
                "memory_used": g.memory_used,
                "memory_free": g.memory_free,
                "utilization_percent": g.utilization_percent,
                "holders": [
                    {"pid": h.pid, "service": h.service, "command": h.command, "used_memory": h.used_memory}
                    for h in g.holders
                ],
            }
        )
    placed = {p.name: p.gpus for p in orch.plan.processes if p.gpus}
    return {"source": att.source, "message": att.message, "gpus": gpus, "placed": placed}


def metrics_registry(orch: Orchestrator) -> CollectorRegistry:
    """A Prometheus registry with the ``corral_gpu_*`` gauges, attributed to the fleet."""
    from prometheus_client import CollectorRegistry

    from corral.gpu.metrics import register_gpu_metrics

    registry = CollectorRegistry()
    register_gpu_metrics(registry, services=lambda: service_roots(orch))
    return registry
