"""corral.registry: the service registry (``corral registry``) and its client.

Instances (backends, sitters) register with a lease and heartbeat; every change bumps a
revision and is pushed to watchers. See docs/registry.md for the API.

Names are imported lazily (PEP 562): every ``corral`` command imports this package through
the CLI, and the client pulls in aiohttp, which a ``corral --help`` should not pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "NotRegistered": "corral.registry.client",
    "Registration": "corral.registry.client",
    "RegistryClient": "corral.registry.client",
    "RegistryError": "corral.registry.client",
    "RegistryUnavailable": "corral.registry.client",
    "WatchEvent": "corral.registry.client",
    "Heartbeater": "corral.registry.heartbeat",
    "run_heartbeats": "corral.registry.heartbeat",
    "RegistryView": "corral.registry.view",
    "ViewChange": "corral.registry.view",
}

if TYPE_CHECKING:
    from corral.registry.client import (
        NotRegistered,
        Registration,
        RegistryClient,
        RegistryError,
        RegistryUnavailable,
        WatchEvent,
    )
    from corral.registry.heartbeat import Heartbeater, run_heartbeats
    from corral.registry.view import RegistryView, ViewChange


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'corral.registry' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Heartbeater",
    "NotRegistered",
    "Registration",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "RegistryView",
    "ViewChange",
    "WatchEvent",
    "run_heartbeats",
]
