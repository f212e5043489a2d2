"""corral.registry: the service registry (``corral registry``) and its client.

Instances (backends, sitters) register with a lease and heartbeat; every change bumps a
revision and is pushed to watchers. See docs/registry.md for the API.
"""

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
