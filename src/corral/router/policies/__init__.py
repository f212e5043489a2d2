"""Load-balancing policies, one module each; the module name is the config string.

Each module offers ``select(candidates, ctx) -> Instance | None``: ``candidates`` is the
:class:`corral.router.routable.Routable` set of the requested model (healthy, circuit closed or
trial allowed, below their concurrency limit; more than one), kept up to date by the pool, so a
policy never scans the fleet: every ``select`` is O(1) or O(log n) in the number of instances.
``ctx`` is the request's :class:`corral.router.context.RequestContext`. Policies decide and
nothing else: no I/O, no logs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from corral.errors import ConfigError

NAMES = ("round_robin", "least_outstanding", "power_of_two", "prefix_affinity", "cache_aware")


def load(name: str, settings: Any = None) -> Callable[[Any, Any], Any]:
    """The ``select`` function of policy ``name``; ConfigError naming the choices otherwise.

    ``settings`` (the router's): a policy with constants of its own (``cache_aware``) takes
    them from its table (``settings.cache_aware``) through its module's ``configure``.
    """
    if name not in NAMES:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(NAMES)}", field="router.policy")
    module = importlib.import_module(f"corral.router.policies.{name}")
    table = getattr(settings, name, None) if settings is not None else None
    if table is not None and hasattr(module, "configure"):
        module.configure(table)
    return module.select  # type: ignore[no-any-return]
