"""``cache_aware``: send a prompt where its prefix is cached, unless that costs more than a miss.

The router keeps an approximate prefix tree (:mod:`corral.router.prefix_tree`) of the prompts it
sent to each instance. For a request it looks at a bounded set of candidates, whatever the fleet's
size: the instances holding its deepest cached prefix, those holding its first block (a shared
system prompt), the least loaded instance and two random ones (fresh capacity); in a fleet of at
most ``SMALL`` instances, all of them. Each gets a cost

    (load + 1) x speed x (1 + MISS_WEIGHT x uncached fraction of the prompt)

where ``load`` is the engine's queue (scraped from its /metrics) or our in-flight count, and
``speed`` its recent time to first byte relative to the typical candidate's, less a slack (a
slow replica costs more per request, so its share of new work follows its speed; the noise of
hits and misses does not move conversations). The cheapest wins, then the tree records it.
A hot prefix does not pile onto one instance: its load grows its cost until another instance
with the prefix (or without it) is cheaper; ``BALANCE_ABS``/``BALANCE_REL`` also send a
request to the least loaded instance outright when the fleet is that unbalanced, as SGLang's
router does.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

from corral.router.instance import Instance
from corral.router.prefix_tree import PrefixTree, chain
from corral.router.routable import Routable

MISS_WEIGHT = 8.0  # a full miss costs (1 + 8)x a full hit at equal load and speed
SPEED_SLACK = 0.5  # up to 1.5x the typical time to first byte counts as normal speed
OWNERS = 8  # candidates taken from one tree node (the most recent)
SMALL = 8  # fleets this small: every instance is a candidate
BALANCE_ABS, BALANCE_REL = 16, 3.0  # load gap that overrides the cache entirely
# A request whose longest cached prefix covers HOME_MATCH of it, on one instance alone (its own
# history, not a shared system prompt), stays there while that instance is at normal speed and
# its load is at most HOME_LOAD_REL x the least + HOME_LOAD_ABS.
HOME_MATCH, HOME_LOAD_REL, HOME_LOAD_ABS = 0.5, 2.0, 4

tree = PrefixTree()
_rand = random.Random()


def _recent(owners: dict[str, None]) -> Iterator[str]:
    """The ``OWNERS`` most recent owners, O(OWNERS) however many there are."""
    return itertools.islice(reversed(owners), OWNERS)


def select(candidates: Routable, ctx: Any) -> Instance | None:
    """The candidate of least cost; the prompt is then recorded as sent there."""
    hashes, ends = chain(ctx.body) if ctx is not None else ([], [])
    low = candidates.least_loaded()
    members = candidates.members
    pool: dict[Instance, int]  # candidate -> prompt chars it has cached
    if len(members) <= SMALL:
        pool = dict.fromkeys(members, 0)
    else:
        pool = {low: 0}
        i = int(_rand.random() * len(members))
        j = int(_rand.random() * (len(members) - 1))
        pool.setdefault(members[i], 0)
        pool.setdefault(members[j + (j >= i)], 0)
    total = ends[-1] if ends else 0
    depth = tree.depth(hashes) if hashes else 0
    if depth:
        for owner in _recent(tree.owners(hashes[depth - 1])):
            inst = candidates.get(owner)
            if inst is not None:
                pool[inst] = ends[depth - 1]
        for owner in _recent(tree.owners(hashes[0])):
            inst = candidates.get(owner)
            if inst is not None and not pool.get(inst):
                k = tree.matched(hashes, owner, depth)
                pool[inst] = ends[k - 1] if k else 0
        for inst in pool:
            if not pool[inst] and inst.id in tree.owners(hashes[0]):
                k = tree.matched(hashes, inst.id, depth)
                pool[inst] = ends[k - 1] if k else 0
    best = _cheapest(pool, total, low)
    if hashes:
        tree.insert(hashes, best.id)
    return best


def _speed(inst: Instance, typical: float) -> float:
    # Relative to the typical candidate, with slack: a hit or a miss moves one instance's
    # time to first byte by 2x, which must not read as a slow replica.
    return max(1.0, inst.ewma_s / typical - SPEED_SLACK) if inst.ewma_s and typical else 1.0


def _cheapest(pool: dict[Instance, int], total: int, low: Instance) -> Instance:
    known = sorted(i.ewma_s for i in pool if i.ewma_s)
    typical = known[len(known) // 2] if known else 0.0
    least = min(i.load for i in pool)
    most = max(i.load for i in pool)
    if most - least > BALANCE_ABS and most > BALANCE_REL * least:
        pool = {i: c for i, c in pool.items() if i.load == least} or {low: 0}
    home = max(pool, key=pool.__getitem__)
    runner_up = max((c for i, c in pool.items() if i is not home), default=0)
    if (
        total
        and pool[home] >= HOME_MATCH * total
        and pool[home] > runner_up  # its own history, not a prefix every instance holds
        and home.load <= HOME_LOAD_REL * least + HOME_LOAD_ABS
        and _speed(home, typical) == 1.0
    ):
        return home  # the conversation's history is there and it is not overloaded: stay
    best, best_cost = low, float("inf")
    for inst, cached in pool.items():
        miss = 1.0 - cached / total if total else 1.0
        cost = (inst.load + 1) * _speed(inst, typical) * (1 + MISS_WEIGHT * miss)
        if cost < best_cost:
            best, best_cost = inst, cost
    return best
