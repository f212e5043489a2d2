"""What stands between a parsed request and its route: a key's limits and on-demand models.

A mixin of :class:`corral.router.proxy.Proxy` (split out by concept): a request for an on-demand
model is counted in flight so idle unload waits for it; a keyed request is admitted by its key's
rate and concurrency limits, counted per key, then routed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from corral.router.context import RequestContext
from corral.router.http import Connection, Reply
from corral.router.keys import Key
from corral.router.metrics import UNKNOWN_MODEL, Metrics
from corral.router.ondemand import ModelEntry, OnDemand
from corral.router.pool import Pool
from corral.router.responses import error

if TYPE_CHECKING:  # imported only when keys are configured (corral.router.app)
    from corral.router.limits import Limits, Refusal
    from corral.router.tenants import Tenants


class Admission:
    """Admission around ``Proxy._route``: unknown vs unavailable models, keys, on-demand bookkeeping."""

    tenants: Tenants | None
    metrics: Metrics
    pool: Pool
    limits: Limits  # the tenants' (set with them)
    _inflight: dict[str, RequestContext]
    _same_id: dict[str, list[RequestContext]]
    _track: Callable[[str, RequestContext], None]
    _untrack: Callable[[str, RequestContext], None]

    async def _route(
        self,
        conn: Connection,
        ctx: RequestContext,
        model: str,
        raw: bytes,
        head: bytes,
        stream: bool,
        strip_usage: bool,
        t0: float,
    ) -> Reply | None:
        raise NotImplementedError

    def _no_instances(self, model: str, target: str, rid: str) -> Reply:
        """No instance serves ``target`` now: 503 at once when one did before (its instances
        are down, cut off or restarting: retry later), 404 when no instance ever served it."""
        if target in self.pool.seen_models:
            self.metrics.error(model, 503)
            msg = f"model {model!r} is known but no instance of it is available now; retry later"
            return error(503, msg, rid, "model_unavailable", 1)
        names = ", ".join(self.pool.model_names()) or "none"
        self.metrics.error(UNKNOWN_MODEL, 404)  # a client's string is never a label value
        return error(404, f"model {model!r} not found; available: {names}", rid, "model_not_found")

    async def _route_on_demand(
        self,
        od: OnDemand,
        key: Key | None,
        conn: Connection,
        ctx: RequestContext,
        model: str,
        raw: bytes,
        head: bytes,
        stream: bool,
        strip_usage: bool,
        t0: float,
        admitted: bool,
    ) -> Reply | None:
        """Route a request for an on-demand model, counted in flight so idle unload waits for it."""
        entry: ModelEntry | None = od.started(model)
        try:
            if key is None:
                self._track(ctx.request_id, ctx)
                try:
                    return await self._route(conn, ctx, model, raw, head, stream, strip_usage, t0)
                finally:
                    self._untrack(ctx.request_id, ctx)
            args = (conn, ctx, model, raw, head, stream, strip_usage, t0, admitted)
            return await self._route_keyed(key, *args)
        finally:
            if entry is not None:
                OnDemand.ended(entry)

    async def _admit(self, key: Key, rid: str) -> Reply | None:
        """None when the key's rate and concurrency limits let this request in; else the 429."""
        tenants = self.tenants
        assert tenants is not None
        refusal = tenants.limits.admit_local(key)
        if refusal is None and tenants.limits.shared and (key.rpm or key.tpm):
            refusal = await tenants.limits.admit_shared(key)
        if refusal is None:
            return None
        return self._refused(key, rid, refusal)

    def _refused(self, key: Key, rid: str, refusal: Refusal) -> Reply:
        self.metrics.refused(key.name, refusal.code)
        return error(429, refusal.message, rid, refusal.code, refusal.retry_after)

    async def _route_keyed(
        self,
        key: Key,
        conn: Connection,
        ctx: RequestContext,
        target: str,
        raw: bytes,
        head: bytes,
        stream: bool,
        strip_usage: bool,
        t0: float,
        admitted: bool = False,
    ) -> Reply | None:
        """Admit by the key's limits (unless already ``admitted``), count it in flight for the
        key, then route.

        Every request of a keyed router comes here: _admit is inlined for limits kept in this
        process (no coroutine), and so is the common case of InFlight.track/untrack.
        """
        rid = ctx.request_id
        if key.limited and not admitted:
            limits = self.limits
            refusal = limits.admit_local(key)
            if refusal is not None:
                return self._refused(key, rid, refusal)
            if limits.shared and (key.rpm or key.tpm):
                refusal = await limits.admit_shared(key)
                if refusal is not None:
                    return self._refused(key, rid, refusal)
        ctx.key = key
        state = key.state
        state.in_flight += 1
        inflight = self._inflight
        if inflight.setdefault(rid, ctx) is not ctx:
            self._track(rid, ctx)  # a client reused an id in flight: the side table
        try:
            return await self._route(conn, ctx, target, raw, head, stream, strip_usage, t0)
        finally:
            state.in_flight -= 1
            if inflight.get(rid) is ctx and not self._same_id:
                del inflight[rid]
            else:
                self._untrack(rid, ctx)

    def _out_of_scope(self, key: Key, model: str, rid: str) -> Reply:
        """403 naming the models this key may use."""
        assert self.tenants is not None
        allowed = self.tenants.allowed_models(key, self.pool.model_names(), self.pool.aliases)
        names = ", ".join(allowed) or "none served now (patterns: " + ", ".join(key.patterns) + ")"
        self.metrics.refused(key.name, "model_not_allowed")
        message = f"key {key.name!r} may not use model {model!r}; it may use: {names}"
        return error(403, message, rid, "model_not_allowed")
