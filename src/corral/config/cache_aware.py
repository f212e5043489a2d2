"""``[router.cache_aware]``: the constants of the ``cache_aware`` routing policy.

The defaults are the values measured with ``bench/routing_quality.py`` (docs/routing.md); change
them only with that benchmark (or your own traffic) at hand. Read by the policy at router start
(``corral.router.policies.cache_aware.configure``); ignored by every other policy.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CacheAwareSettings(BaseModel):
    """How ``cache_aware`` weighs the prefix cache against load and speed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The cache counts only among candidates whose speed-weighted load, (load + 1) x speed, is
    # within load_gap of the least: a holder of a hot prefix takes more than its share, not all.
    load_gap: float = Field(default=5.0, ge=0)
    # speed = an instance's floor of time to first byte / the typical candidate's - speed_slack
    # (at least 1): up to 1 + speed_slack times the typical counts as normal speed.
    speed_slack: float = Field(default=0.25, ge=0)
    # A request whose own history (past its first message, held by one instance more than by
    # any other) covers home_match of its prompt stays there while that instance's load is at
    # most home_load_rel x the least loaded candidate's + home_load_abs.
    home_match: float = Field(default=0.5, ge=0, le=1)
    home_load_rel: float = Field(default=2.0, ge=1)
    home_load_abs: float = Field(default=8.0, ge=0)
    # Candidates taken from one prefix-tree node (its most recent instances).
    owners: int = Field(default=8, ge=1, le=1024)
    # Fleets of at most this many instances: every instance is a candidate.
    small_fleet: int = Field(default=8, ge=1, le=1024)
    # The longest a request waits for the prefill of its prefix in flight on its instance (a
    # stream's, until its first byte) before it is sent anyway.
    hold_s: float = Field(default=2.0, ge=0, le=60)
    # Time each new instance once with a 1-token completion (its first speed figure), so a slow
    # replica is known before the first burst of requests meets it.
    speed_probe: bool = True
    # ...and again every reprobe_s while it looks slow (its floor above the typical one, less
    # speed_slack) and got no request in that time: a slow first answer (an engine's warm-up)
    # must not keep a good replica out for good. 0: never again.
    reprobe_s: float = Field(default=30.0, ge=0)
    # Prefix-tree memory: at most this many blocks (~100 bytes each), least recently used out.
    tree_blocks: int = Field(default=1 << 17, ge=1024)
