"""Draining a replica: out of rotation for new requests, then wait for its in-flight ones.

The registry holds the ``draining`` flag (``PATCH /v1/instances/{id} {"draining": true}``):
every router watching it stops sending the instance anything new at once. In-flight requests
are counted by the one process that sees them, the router (``GET /workers``: ``outstanding``
per instance): the launcher polls it until the replica's count is 0 or ``drain_timeout_s``
passed. Without a router (or a registry) there is nothing to drain: the wait is skipped.
One router process is assumed (``corral router --workers N`` keeps a count per worker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from corral.config import Plan, ProcessPlan
    from corral.registry import RegistryClient

log = logging.getLogger(__name__)

_POLL_S = 0.05


@dataclass(frozen=True)
class DrainReport:
    """What a drain did: the registry instances marked, how long it waited, what was left."""

    ids: list[str]
    waited_s: float
    in_flight_left: int | None  # None: no router to ask


class Drainer:
    """Marks replicas draining in the registry and watches their in-flight count at the router."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        reg, router = plan.get("registry"), plan.get("router")
        self.registry_token = reg.token if reg else None
        self.router_token = router.token if router else None
        self._registry: RegistryClient | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def registry(self) -> RegistryClient | None:
        if self._registry is None and self.plan.registry_url:
            from corral.registry import RegistryClient
            from corral.tls import client_context

            self._registry = RegistryClient(
                self.plan.registry_url,
                token=self.registry_token or self.plan.registry_token,
                timeout_s=5,
                ssl=client_context(self.plan.ca),
            )
        return self._registry

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.router_token}"} if self.router_token else {}
            from corral.launcher.http_client import session

            self._session = session(
                self.plan.client_ssl(), headers=headers, timeout=aiohttp.ClientTimeout(total=5)
            )
        return self._session

    async def close(self) -> None:
        """Close the clients."""
        if self._registry is not None:
            await self._registry.close()
        if self._session is not None:
            await self._session.close()

    # -- registry -------------------------------------------------------------------------------
    async def instances(self, p: ProcessPlan) -> list[dict[str, Any]]:
        """The registry's backend instances of replica ``p`` (by URL or service name)."""
        if self.registry is None or p.url is None:
            return []
        found = await self.registry.list()
        return [
            i
            for i in found
            if i.get("kind", "backend") == "backend" and (i.get("url") == p.url or i.get("service") == p.name)
        ]

    async def set_draining(self, p: ProcessPlan, draining: bool) -> list[str]:
        """Mark (or unmark) every registry instance of ``p``; their ids."""
        ids = [str(i["id"]) for i in await self.instances(p)]
        assert self.registry is not None or not ids
        for iid in ids:
            try:
                await self.registry.drain(iid, draining)  # type: ignore[union-attr]
            except Exception as exc:  # a vanished instance is drained enough; say why otherwise
                log.warning("%s: marking %s draining=%s failed: %s", p.name, iid, draining, exc)
        return ids

    # -- router ---------------------------------------------------------------------------------
    async def workers(self) -> list[dict[str, Any]] | None:
        """The router's view of its instances, or None when there is no router to ask."""
        if not self.plan.router_url:
            return None
        try:
            async with self.session.get(f"{self.plan.router_url}/workers") as r:
                if r.status != 200:
                    return None
                doc = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None
        found = doc.get("workers", doc) if isinstance(doc, dict) else doc
        return [w for w in found if isinstance(w, dict)] if isinstance(found, list) else None

    async def in_flight(self, url: str) -> int | None:
        """Requests the router has outstanding at ``url`` (None: no router answered)."""
        found = await self.workers()
        if found is None:
            return None
        return sum(int(w.get("outstanding") or 0) for w in found if w.get("url") == url)

    async def routable(self, url: str) -> bool:
        """Whether the router has ``url`` healthy and not draining (True without a router)."""
        found = await self.workers()
        if found is None:
            return not self.plan.router_url
        return any(w.get("url") == url and w.get("healthy") and w.get("state") != "draining" for w in found)

    async def wait_routable(self, url: str, timeout_s: float) -> bool:
        """Poll until the router routes to ``url`` again; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not await self.routable(url):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(_POLL_S)
        return True

    # -- both -----------------------------------------------------------------------------------
    async def drain(self, p: ProcessPlan, timeout_s: float) -> DrainReport:
        """Take ``p`` out of rotation and wait (up to ``timeout_s``) for its in-flight requests."""
        began = time.monotonic()
        ids = await self.set_draining(p, True)
        left: int | None = None
        if ids and p.url is not None:
            # The router sees the flag through its registry watch within milliseconds; until its
            # view says "draining", a count of 0 could still be followed by a new request.
            while time.monotonic() - began < timeout_s:
                found = await self.workers()
                if found is None:
                    break
                mine = [w for w in found if w.get("url") == p.url]
                left = sum(int(w.get("outstanding") or 0) for w in mine)
                if all(w.get("state") == "draining" for w in mine) and left == 0:
                    break
                await asyncio.sleep(_POLL_S)
        waited = time.monotonic() - began
        log.info("%s: drained in %.2fs (%s in flight left)", p.name, waited, left)
        return DrainReport(ids, waited, left)
