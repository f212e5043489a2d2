"""``power_of_two``: sample two candidates at random, take the less loaded one (O(1))."""

from __future__ import annotations

import random
from typing import Any

from corral.router.instance import Instance
from corral.router.routable import Routable

_rand = random.Random()


def select(candidates: Routable, ctx: Any) -> Instance | None:
    """The less loaded of two distinct random candidates (ties go to the first drawn)."""
    members = candidates.members
    n = len(members)
    i = int(_rand.random() * n)
    j = int(_rand.random() * (n - 1))
    if j >= i:
        j += 1
    a, b = members[i], members[j]
    return b if b.outstanding < a.outstanding else a
