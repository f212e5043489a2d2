"""``least_outstanding`` (default): the candidate with the fewest requests in flight.

O(1): the routable set keeps its members in load buckets. Ties go to the instance idle the
longest, so an idle fleet at concurrency 1 still spreads requests instead of always using one.
"""

from __future__ import annotations

from typing import Any

from corral.router.instance import Instance
from corral.router.routable import Routable


def select(candidates: Routable, ctx: Any) -> Instance | None:
    """The least loaded candidate."""
    return candidates.least_loaded()
