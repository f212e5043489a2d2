"""``round_robin``: each request to the next candidate in turn."""

from __future__ import annotations

import itertools
from typing import Any

from corral.router.instance import Instance

_counter = itertools.count()


def select(candidates: list[Instance], ctx: Any) -> Instance | None:
    """The next candidate in rotation (one counter shared by all models)."""
    return candidates[next(_counter) % len(candidates)]
