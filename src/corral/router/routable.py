"""The routable instances of one model, kept up to date on state changes instead of per request.

A request used to rebuild and scan its model's candidate list, so its CPU grew with the fleet.
Now the pool keeps, per model, a :class:`Routable`: the instances a new request may go to now,
changed only when an instance's state changes (``Pool.refresh``, the one function every state
change calls), and indexed so that every policy selects in O(1) or O(log n):

- ``members``: a list with O(1) add/remove (swap with the last), for round robin and sampling;
- load buckets (``outstanding`` -> instances, in arrival order) with a moving lower bound, for
  the least loaded instance in O(1) amortised; an instance released goes to the back of its
  bucket, so ties rotate. They are kept while there are two members or more: a lone member is
  taken without asking a policy, so the pool does not move it between buckets on every
  request; :meth:`Routable.add` files it afresh when a second one comes;
- ``instances`` + ``generation``: every instance serving the model, routable or not, for
  structures that must not be rebuilt when one instance flaps (the consistent-hash ring).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from corral.router.instance import Instance


class Routable:
    """The routable instances of one model (all mutation on the event loop, by the pool)."""

    __slots__ = ("_buckets", "_ids", "_low", "_pos", "generation", "instances", "members", "ring")

    def __init__(self, members: Iterable[Instance] = (), instances: list[Instance] | None = None) -> None:
        self.members: list[Instance] = []
        self._pos: dict[Instance, int] = {}
        self._ids: dict[str, Instance] = {}
        # OrderedDict, not dict: a dict whose first entries were popped scans past their holes
        # on next(iter()) until it is resized, which made "the first of the bucket" O(n).
        self._buckets: list[OrderedDict[Instance, None]] = [OrderedDict()]
        self._low = 0
        for inst in members:
            self.add(inst)
        self.instances: list[Instance] = list(self.members) if instances is None else instances
        self.generation = 0  # bumped when ``instances`` changes
        # prefix_affinity's consistent-hash ring over ``instances``, kept here so that a change
        # of the instances moves only the points of those that came or went.
        self.ring: Any = None

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, inst: object) -> bool:
        return inst in self._pos

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.members)

    def add(self, inst: Instance) -> None:
        """Make ``inst`` routable (no-op if it is)."""
        if inst in self._pos:
            return
        if len(self.members) == 1:  # a second member: the lone one's bucket may be stale
            lone = self.members[0]
            for b in self._buckets:
                b.pop(lone, None)
            self._bucket(lone.outstanding)[lone] = None
            self._low = 0
        self._pos[inst] = len(self.members)
        self._ids[inst.id] = inst
        self.members.append(inst)
        self._bucket(inst.outstanding)[inst] = None
        if inst.outstanding < self._low:
            self._low = inst.outstanding

    def remove(self, inst: Instance) -> None:
        """Take ``inst`` out (no-op if it is out): swap with the last member, O(1)."""
        i = self._pos.pop(inst, None)
        if i is None:
            return
        if self._ids.get(inst.id) is inst:
            del self._ids[inst.id]
        last = self.members.pop()
        if last is not inst:
            self.members[i] = last
            self._pos[last] = i
        if not self.members:
            self._buckets, self._low = [OrderedDict()], 0  # the lone member's may be stale
        else:
            self._bucket(inst.outstanding).pop(inst, None)

    def get(self, instance_id: str) -> Instance | None:
        """The member with this id, if it is routable now."""
        return self._ids.get(instance_id)

    def moved(self, inst: Instance, old: int) -> None:
        """``inst.outstanding`` changed from ``old``: move it between load buckets. The pool skips
        the call for a lone member (its bucket may go stale: :meth:`add` files it afresh).

        Twice per request (taken, released): ``_bucket`` inlined.
        """
        if inst not in self._pos:
            return
        buckets = self._buckets
        if old < 0:
            old = 0
        if old < len(buckets):
            buckets[old].pop(inst, None)
        new = inst.outstanding
        if 0 <= new < len(buckets):
            buckets[new][inst] = None
        else:
            self._bucket(new)[inst] = None
        if new < self._low:
            self._low = new

    def least_loaded(self) -> Instance:
        """A member with the fewest requests in flight (ties: the longest idle first)."""
        buckets = self._buckets
        low = self._low
        while not buckets[low]:
            low += 1  # members is not empty, so some bucket is not
        self._low = low
        return next(iter(buckets[low]))

    def _bucket(self, load: int) -> OrderedDict[Instance, None]:
        buckets = self._buckets
        if load < 0:
            load = 0  # a stale instance released twice: keep it countable
        while load >= len(buckets):
            buckets.append(OrderedDict())
        return buckets[load]

    def without(self, exclude: Iterable[Instance]) -> Routable:
        """A copy less ``exclude`` (a retry's tried instances: rare, so O(n) is fine)."""
        skip = set(exclude)
        out = Routable((i for i in self.members if i not in skip), self.instances)
        out.generation = self.generation
        out.ring = self.ring
        return out
