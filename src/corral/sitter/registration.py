"""Keep the registry's view of this sitter and its backend true, through ``corral.registry``.

Two :class:`~corral.registry.Heartbeater` s share one :class:`~corral.registry.RegistryClient`:
the backend (whose state routers use) and the sitter itself. A change is pushed at once (the
router must stop sending to a crashed backend within milliseconds, not at the next heartbeat);
a 404 re-registers under the same id; an unreachable registry is retried with backoff and never
touches the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from corral.registry import Heartbeater, RegistryClient

log = logging.getLogger("corral.sitter")

# A registry call that takes longer than a heartbeat interval is moot (the next one is due), and
# with several registries the next one should be tried before the lease runs out: each call is
# bounded by the interval, within [0.5, 3] s.
CALL_TIMEOUT_S = 3.0
MIN_CALL_TIMEOUT_S = 0.5


class RegistryLink:
    """Registers the backend and the sitter with the registry at ``base_url`` (or the first of
    several that answers) and keeps them current."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        service: str,
        backend: dict[str, Any],
        sitter: dict[str, Any],
        heartbeat_s: float,
        token: str | None = None,
        ssl: Any = None,
    ) -> None:
        """``backend`` / ``sitter``: ``id``, ``url``, ``models``, ``state``, ``metadata`` of each."""
        timeout_s = max(MIN_CALL_TIMEOUT_S, min(CALL_TIMEOUT_S, heartbeat_s))
        self.client = RegistryClient(base_url, token=token, timeout_s=timeout_s, ssl=ssl)
        self.lease_ttl_s = 3 * heartbeat_s
        self._metadata = dict(backend.get("metadata") or {})
        self.backend = self._heartbeater(service, "backend", backend, heartbeat_s)
        self.sitter = self._heartbeater(service, "sitter", sitter, heartbeat_s)
        self._left = False

    def _heartbeater(self, service: str, kind: str, doc: dict[str, Any], interval_s: float) -> Heartbeater:
        return Heartbeater(
            self.client,
            service=service,
            url=doc["url"],
            models=doc.get("models", []),
            kind=kind,
            state=doc.get("state", "starting"),
            metadata=doc.get("metadata"),
            instance_id=doc["id"],
            interval_s=interval_s,
            lease_ttl_s=self.lease_ttl_s,
        )

    def update_backend(
        self,
        *,
        state: str | None = None,
        models: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Change what the registry shows for the backend (``metadata`` merged); pushed at once."""
        if metadata is not None:
            self._metadata.update(metadata)
        self.backend.set(
            state=state, models=models, metadata=dict(self._metadata) if metadata is not None else None
        )

    def start(self, backend: bool = True) -> None:
        """Register both instances (the backend later, with ``backend=False``: a parked engine,
        see :meth:`start_backend`) and heartbeat in background tasks."""
        if backend:
            self.backend.start()
        self.sitter.start()

    def start_backend(self) -> None:
        """Register the backend now if it is not yet (idempotent; never once we left)."""
        if not self._left:
            self.backend.start()

    def status(self) -> dict[str, Any]:
        """For ``/info``: the registry, whether each instance is registered, how often it registered."""
        beaters = (self.backend, self.sitter)
        return {
            "url": self.client.base_url,
            "registered": {hb.id: hb.registered.is_set() for hb in beaters},
            "registrations": {hb.id: hb.registrations for hb in beaters},
            "lease_ttl_s": self.lease_ttl_s,
        }

    async def leave(self, timeout: float = 2.0) -> None:
        """Stop heartbeating and deregister both (best effort, bounded by ``timeout``)."""
        self._left = True
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(self.backend.stop(), self.sitter.stop())
            log.info("deregistered %s and %s", self.backend.id, self.sitter.id)
        except TimeoutError:
            log.warning("deregistering from %s timed out after %gs", self.client.base_url, timeout)

    async def close(self) -> None:
        """Stop any heartbeat still running (no deregistration) and close the client."""
        with contextlib.suppress(Exception):
            await asyncio.gather(self.backend.stop(deregister=False), self.sitter.stop(deregister=False))
        await self.client.close()
