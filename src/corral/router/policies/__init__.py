"""Load-balancing policies, one module each; the module name is the config string.

Each module offers ``select(candidates, ctx) -> Instance | None``: ``candidates`` are the
routable instances of the requested model (healthy, circuit closed or trial allowed, below their
concurrency limit), never empty, in a stable order; ``ctx`` is the request's
:class:`corral.router.context.RequestContext`. Policies decide and nothing else: no I/O, no logs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from corral.errors import ConfigError

NAMES = ("round_robin", "least_outstanding", "power_of_two", "prefix_affinity")


def load(name: str) -> Callable[[list[Any], Any], Any]:
    """The ``select`` function of policy ``name``; ConfigError naming the choices otherwise."""
    if name not in NAMES:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(NAMES)}", field="router.policy")
    module = importlib.import_module(f"corral.router.policies.{name}")
    return module.select  # type: ignore[no-any-return]
