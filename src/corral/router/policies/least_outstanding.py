"""``least_outstanding`` (default): the candidate with the fewest requests in flight.

Ties rotate, so an idle fleet at concurrency 1 still spreads requests instead of always
using the first instance.
"""

from __future__ import annotations

import itertools
from typing import Any

from corral.router.instance import Instance

_counter = itertools.count()


def select(candidates: list[Instance], ctx: Any) -> Instance | None:
    """The least loaded candidate, scanning from a rotating start."""
    n = len(candidates)
    start = next(_counter) % n
    best = candidates[start]
    low = best.outstanding
    for k in range(1, n):
        inst = candidates[(start + k) % n]
        if inst.outstanding < low:
            best, low = inst, inst.outstanding
    return best
