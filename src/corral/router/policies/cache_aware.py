"""``cache_aware``: send a prompt where its prefix is cached, unless load or speed say otherwise.

The router keeps an approximate prefix tree (:mod:`corral.router.prefix_tree`) of the prompts it
sent to each instance. For a request it looks at a bounded set of candidates, whatever the fleet's
size: the instances holding its deepest cached prefix, those holding its first block (a shared
system prompt), the least loaded instance and two random ones (fresh capacity); in a fleet of at
most ``small_fleet`` instances, all of them. Then, in order:

1. **Home.** A request whose own history (a cached prefix past its first message, held by one
   instance more than by any other) covers ``home_match`` of its prompt stays there while that
   instance's load is at most ``home_load_rel`` x the least loaded candidate's + ``home_load_abs``:
   moving a conversation re-computes all of it elsewhere.
2. **Cache within a load gap.** Otherwise (a new conversation, or its home is overloaded),
   among the candidates whose speed-weighted load ``(load + 1) x speed`` is within ``load_gap``
   of the least, the one with the longest cached prefix wins (ties: the least loaded). ``load``
   is the engine's queue (scraped from its /metrics) or our in-flight count; ``speed`` is the
   instance's floor of time to first byte (its speed without the queueing) relative to the
   typical candidate's, less ``speed_slack``. The gap spreads a hot system prompt (its holders
   take more than their share, never all of it); the speed term keeps a slow replica's share of
   new conversations near its speed share.

A prefix another request is still bringing to an instance (sent, no first byte yet) counts as
cached there when that request is a stream: this request waits for that prefill to end
(``ctx.hold``, at most ``hold_s``) and then reuses it, instead of computing it all again beside
it (an engine does not share a prefix still in prefill). So a cold start's burst groups by
system prompt, one full prefill per prompt. Behind a non-streamed answer (which says nothing
until it ends) the prefix counts as nothing.

The chosen instance is then recorded in the tree. Constants: ``[router.cache_aware]``
(:class:`corral.config.cache_aware.CacheAwareSettings`), set by :func:`configure`.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from corral.config.cache_aware import CacheAwareSettings
from corral.router.instance import Instance, typical_floor
from corral.router.prefix_tree import CHUNK, Owners, Prefill, PrefixTree, chain
from corral.router.routable import Routable

params = CacheAwareSettings()
tree = PrefixTree(params.tree_blocks)
_rand = random.Random()


def configure(settings: CacheAwareSettings) -> None:
    """Use ``settings`` from now on (router start); a new tree size starts an empty tree."""
    global params, tree
    if settings.tree_blocks != tree.max_blocks:
        tree = PrefixTree(settings.tree_blocks)
    params = settings


def _recent(owners: Owners) -> Iterator[str]:
    """The ``owners`` most recent owners, O(owners) however many there are."""
    return itertools.islice(reversed(owners), params.owners)


def select(candidates: Routable, ctx: Any) -> Instance | None:
    """The request's home, else the candidate of least cost; the prompt is then recorded there.

    When the chosen instance is still computing the prefix this request would reuse (another
    stream's prefill in flight), ``ctx.hold`` is that prefill: the proxy waits for it before
    sending. ``ctx.prefill`` is this request's own, which the proxy finishes.
    """
    hashes, ends = chain(ctx.body) if ctx is not None else ([], [])
    low = candidates.least_loaded()
    members = candidates.members
    pool: dict[Instance, int]  # candidate -> prompt chars it has cached (or will, see _usable)
    if len(members) <= params.small_fleet:
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
        deep = tree.owners(hashes[depth - 1])
        cut = ends[depth - 1]
        known: set[Instance] = set()  # candidates whose cached prefix is settled
        for owner in _recent(deep):
            inst = candidates.get(owner)
            if inst is not None:
                p = deep[owner]
                pool[inst] = cut if p is None or p.done or p.stream else 0
                known.add(inst)
        first = tree.owners(hashes[0])
        for owner in _recent(first):
            inst = candidates.get(owner)
            if inst is not None and inst not in known:
                pool[inst] = _usable(hashes, ends, owner, tree.matched(hashes, owner, depth))
                known.add(inst)
        for inst in pool:
            if inst not in known and inst.id in first:
                pool[inst] = _usable(hashes, ends, inst.id, tree.matched(hashes, inst.id, depth))
    opening = _opening(ctx.body, ends) if ctx is not None else 0
    best = _home(pool, total, opening) or _cheapest(pool, total, low)
    if hashes:
        prefill = None
        if ctx is not None:
            cached = pool[best]  # ends rise strictly: the block it ends is found by bisection
            ctx.hold = tree.prefill(hashes[bisect_left(ends, cached)], best.id) if cached else None
            prefill = ctx.prefill = Prefill(ctx.body.get("stream") is True, params.hold_s)
        tree.insert(hashes, best.id, prefill)
    return best


def _usable(hashes: list[int], ends: list[int], owner: str, k: int) -> int:
    """Prompt chars of the first ``k`` blocks, which ``owner`` was sent, that count as cached.

    Blocks another request is still bringing count when it is a stream (the proxy waits for its
    first byte); behind a non-streamed answer they count as nothing: nothing says when its
    prefill ends, and waiting for the whole answer costs more than computing them elsewhere
    (this also spreads a cold start's burst of non-streamed requests).
    """
    if not k:
        return 0
    p = tree.prefill(hashes[k - 1], owner)
    return ends[k - 1] if p is None or p.stream else 0


def _opening(body: dict[str, Any], ends: list[int]) -> int:
    """Prompt chars (as ``ends`` counts them) of a chat's first message; 0 for other prompts.

    The first message is usually a system prompt that many conversations share: a match that
    goes no further is not a conversation's own history.
    """
    messages = body.get("messages")
    if not (isinstance(messages, list) and messages and isinstance(messages[0], dict)):
        return 0
    content = messages[0].get("content")
    n = len(content if isinstance(content, str) else repr(content))
    blocks = max(1, -(-n // CHUNK))  # chain() cuts a message into CHUNK-char blocks
    return ends[blocks - 1] if len(ends) >= blocks else 0


def _home(pool: dict[Instance, int], total: int, opening: int) -> Instance | None:
    """The instance holding this conversation's own history, if it should stay there."""
    if not total:
        return None
    home = max(pool, key=pool.__getitem__)
    cached = pool[home]
    if cached < params.home_match * total or cached <= opening:
        return None
    if any(c >= cached for i, c in pool.items() if i is not home):
        return None  # as much elsewhere: a shared prefix, not this conversation's own
    least = min(i.load for i in pool)
    return home if home.load <= params.home_load_rel * least + params.home_load_abs else None


def _cheapest(pool: dict[Instance, int], total: int, low: Instance) -> Instance:
    """Among candidates within ``load_gap`` of the least speed-weighted load, the one with the
    longest cached prefix; ties go to the least loaded.

    speed = an instance's floor of time to first byte / the typical candidate's - ``speed_slack``
    (at least 1): the floor moves a little with the prompts an instance happens to get, which
    must not read as a slow replica. One pass to weigh, one to choose (it runs per request).
    """
    floors = sorted([i.floor_s for i in pool if i.floor_s])
    typical = typical_floor(floors)
    slack = params.speed_slack
    weighed = []
    least = float("inf")
    for inst, cached in pool.items():
        w = inst.load + 1.0
        f = inst.floor_s
        if f and typical:
            speed = f / typical - slack
            if speed > 1.0:
                w *= speed
        if w < least:
            least = w
        weighed.append((w, cached, inst))
    limit = least + params.load_gap
    best, best_w, best_cached = low, 0.0, -1
    for w, cached, inst in weighed:
        # Too far above the least loaded and its cache does not count; else longest prefix,
        # then least weighted load.
        if w <= limit and (cached > best_cached or (cached == best_cached and w < best_w)):
            best, best_w, best_cached = inst, w, cached
    return best
