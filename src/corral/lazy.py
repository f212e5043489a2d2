"""Package names imported on first use (PEP 562), so a process loads only the modules it uses.

The router imports ``corral.config`` and ``corral.settings`` for one or two names; importing every
submodule eagerly would load plans, GPU placement and process supervision into it (~4 MB).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(module: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each name in ``where`` from its home module the first
    time it is asked for, then keeps it on ``module``."""
    mod = sys.modules[module]

    def __getattr__(name: str) -> Any:
        home = where.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(mod, name, value)
        return value

    return __getattr__
