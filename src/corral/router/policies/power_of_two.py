"""``power_of_two``: sample two candidates at random, take the less loaded one."""

from __future__ import annotations

import random
from typing import Any

from corral.router.instance import Instance

_rand = random.Random()


def select(candidates: list[Instance], ctx: Any) -> Instance | None:
    """The less loaded of two random candidates (ties go to the first drawn)."""
    a, b = _rand.sample(candidates, 2) if len(candidates) > 2 else candidates
    if _rand.random() < 0.5:
        a, b = b, a
    return b if b.outstanding < a.outstanding else a
