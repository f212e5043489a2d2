"""``round_robin``: each request to the next candidate in turn."""

from __future__ import annotations

import itertools
from typing import Any

from corral.router.instance import Instance
from corral.router.routable import Routable

_counter = itertools.count()


def select(candidates: Routable, ctx: Any) -> Instance | None:
    """The next candidate in rotation (one counter shared by all models), O(1)."""
    members = candidates.members
    return members[next(_counter) % len(members)]
