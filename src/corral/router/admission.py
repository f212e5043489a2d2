"""The answers that refuse a request before its route: unknown vs unavailable model, a key's
limits and scope.

A mixin of :class:`corral.router.proxy.Proxy` (split out by concept). The admission itself (a
key's limits, counting in flight per key and per on-demand model) is inlined in ``Proxy.handle``:
it runs on every request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.router.http import Reply
from corral.router.keys import Key
from corral.router.metrics import UNKNOWN_MODEL, Metrics
from corral.router.pool import Pool
from corral.router.responses import error

if TYPE_CHECKING:  # imported only when keys are configured (corral.router.app)
    from corral.router.limits import Refusal
    from corral.router.tenants import Tenants


class Admission:
    """The refusals of ``Proxy.handle``: unknown vs unavailable model, a key's limits and scope."""

    tenants: Tenants | None
    metrics: Metrics
    pool: Pool

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

    def _out_of_scope(self, key: Key, model: str, rid: str) -> Reply:
        """403 naming the models this key may use."""
        assert self.tenants is not None
        allowed = self.tenants.allowed_models(key, self.pool.model_names(), self.pool.aliases)
        names = ", ".join(allowed) or "none served now (patterns: " + ", ".join(key.patterns) + ")"
        self.metrics.refused(key.name, "model_not_allowed")
        message = f"key {key.name!r} may not use model {model!r}; it may use: {names}"
        return error(403, message, rid, "model_not_allowed")
