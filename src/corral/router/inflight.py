"""The table of proxied requests in flight, by request id (for ``/v1/cancel`` and shutdown).

A client may reuse an id while a request with it is in flight: the later ones wait in a side
table (rare path) so neither is lost, and cancel reaches all of them. The proxy inlines the
common case of :meth:`InFlight.track` / :meth:`InFlight.untrack` (``by_id`` alone, ``same_id``
empty) on its hot path and calls them otherwise.
"""

from __future__ import annotations

from corral.router.context import RequestContext


class InFlight:
    """Requests in flight by id; mutated on the event loop only."""

    def __init__(self) -> None:
        self.by_id: dict[str, RequestContext] = {}
        self.same_id: dict[str, list[RequestContext]] = {}  # later requests reusing an id

    def track(self, rid: str, ctx: RequestContext) -> None:
        """Note ``ctx`` as in flight under ``rid`` (it may already be ``by_id``'s entry)."""
        first = self.by_id.setdefault(rid, ctx)
        if first is not ctx:
            self.same_id.setdefault(rid, []).append(ctx)  # a client reused an id: keep both

    def untrack(self, rid: str, ctx: RequestContext) -> None:
        """``ctx`` finished."""
        if self.by_id.get(rid) is ctx:
            del self.by_id[rid]
            if self.same_id:
                later = self.same_id.get(rid)
                if later:
                    self.by_id[rid] = later.pop(0)
                    if not later:
                        del self.same_id[rid]
            return
        later = self.same_id.get(rid)
        if later and ctx in later:
            later.remove(ctx)
            if not later:
                del self.same_id[rid]

    def count(self) -> int:
        """How many requests are in flight."""
        return len(self.by_id) + sum(len(v) for v in self.same_id.values())

    def cancel(self, request_id: str, owner: str | None = None) -> bool:
        """Cancel every request with this id (``owner``: only that key's); False when none."""
        done = False
        for ctx in (self.by_id.get(request_id), *self.same_id.get(request_id, ())):
            if ctx is None or ctx.task is None or ctx.task.done():
                continue
            if owner is not None and (ctx.key is None or ctx.key.name != owner):
                continue
            ctx.cancelled = True
            ctx.task.cancel()
            done = True
        return done

    def cancel_all(self) -> int:
        """Cancel every request in flight; how many were."""
        n = 0
        for ctx in [*self.by_id.values(), *(c for v in self.same_id.values() for c in v)]:
            if ctx.task is not None and not ctx.task.done():
                ctx.cancelled = True
                ctx.task.cancel()
                n += 1
        return n
