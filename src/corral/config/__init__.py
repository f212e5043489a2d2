"""corral's configuration: the ``corral.toml`` models, loading, and the resolved plan.

``load_config(path)`` reads and validates a file; ``resolve_plan(config, path)`` turns it into
the list of processes ``corral up`` runs. Both raise :class:`corral.errors.ConfigError` with the
file, the field path and the problem.

The names below are imported on first use (PEP 562): the router imports small submodules of this
package (``corral.config.cache_aware``), and importing the whole fleet configuration with them
(plans, GPUs, process supervision, psutil) cost every router process ~4 MB and ~0.4 s at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.lazy import lazy_exports

if TYPE_CHECKING:
    from corral.config.load import load_config
    from corral.config.models import (
        BackendConfig,
        Config,
        Dependency,
        ProbeConfig,
        RestartConfig,
        ServiceConfig,
    )
    from corral.config.plan import Plan, ProcessPlan, resolve_plan

_WHERE = {
    "load_config": "corral.config.load",
    "BackendConfig": "corral.config.models",
    "Config": "corral.config.models",
    "Dependency": "corral.config.models",
    "ProbeConfig": "corral.config.models",
    "RestartConfig": "corral.config.models",
    "ServiceConfig": "corral.config.models",
    "Plan": "corral.config.plan",
    "ProcessPlan": "corral.config.plan",
    "resolve_plan": "corral.config.plan",
}


__getattr__ = lazy_exports(__name__, _WHERE)


def load_plan(path: str, *, gpus: list[int] | None = None, place_gpus: bool = True) -> Plan:
    """``load_config`` then ``resolve_plan``."""
    from corral.config.load import load_config
    from corral.config.plan import resolve_plan

    return resolve_plan(load_config(path), path, gpus=gpus, place_gpus=place_gpus)


__all__ = [
    "BackendConfig",
    "Config",
    "Dependency",
    "Plan",
    "ProbeConfig",
    "ProcessPlan",
    "RestartConfig",
    "ServiceConfig",
    "load_config",
    "load_plan",
    "resolve_plan",
]
