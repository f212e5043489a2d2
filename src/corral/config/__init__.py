"""corral's configuration: the ``corral.toml`` models, loading, and the resolved plan.

``load_config(path)`` reads and validates a file; ``resolve_plan(config, path)`` turns it into
the list of processes ``corral up`` runs. Both raise :class:`corral.errors.ConfigError` with the
file, the field path and the problem.
"""

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


def load_plan(path: str, *, gpus: list[int] | None = None) -> Plan:
    """``load_config`` then ``resolve_plan``."""
    return resolve_plan(load_config(path), path, gpus=gpus)


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
