"""Where instances come from: static workers (probed) and the registry's watch stream (pushed).

Static workers start out of rotation and enter it once their ``/v1/models`` answers; those out of
rotation (never healthy, failed probe, or a connect error seen by the proxy) are probed every
``probe_down_interval_s`` so a recovered one is back within that time. Registry instances follow
the pushed state; the registry going away leaves the last view in place while we reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

from corral.router.config import RouterSettings
from corral.router.instance import Instance
from corral.router.ondemand import OnDemand
from corral.router.pool import Pool

log = logging.getLogger("corral.router")

_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
_TICK = 0.1


class Discovery:
    """Keeps ``pool`` in step with static workers and the registry."""

    def __init__(self, settings: RouterSettings, pool: Pool, ondemand: OnDemand | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.ondemand = ondemand
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self._next_probe: dict[str, float] = {}
        self._probing: set[str] = set()
        self.registry_connected = False
        self.revision = 0
        self.ssl: Any = None  # the client context trusting settings.ca (None: system defaults)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Add configured workers and start the probe loop and the registry watch."""
        from corral.tls import client_context

        self.ssl = client_context(self.settings.ca)
        connector = aiohttp.TCPConnector(ssl=self.ssl) if self.ssl is not None else None
        self.session = aiohttp.ClientSession(timeout=_PROBE_TIMEOUT, connector=connector)
        for w in self.settings.workers:
            self.add_static(w.url, w.max_concurrency)
        self.tasks.append(asyncio.create_task(self._probe_loop()))
        if self.settings.registry_url:
            self.tasks.append(asyncio.create_task(self._watch_loop(self.settings.registry_url)))

    async def close(self) -> None:
        """Stop background tasks and close the probe session."""
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    # -- static workers ----------------------------------------------------------------------
    def add_static(self, url: str, max_concurrency: int = 0) -> Instance:
        """Add (or keep) a static worker; it takes traffic once a probe succeeds."""
        url = url.rstrip("/")
        existing = self.pool.instances.get(url)
        if existing is not None:
            return existing
        s = self.settings
        inst = Instance(
            url,
            source="static",
            max_concurrency=max_concurrency or s.concurrency_for(url),
            breaker_failures=s.breaker.failures,
            cooldown_s=s.breaker.cooldown_s,
        )
        self.pool.upsert(inst)
        if self.ondemand is not None:
            self.ondemand.check_models(inst.models)
        self._next_probe[inst.id] = 0.0
        return inst

    def remove_static(self, url: str) -> bool:
        """Remove a static worker by URL; False if there is none."""
        inst = self.pool.instances.get(url.rstrip("/"))
        if inst is None or inst.source != "static":
            return False
        self.pool.remove(inst.id)
        return True

    async def _probe_loop(self) -> None:
        while True:
            now = time.monotonic()
            for inst in list(self.pool.instances.values()):
                if inst.id in self._probing:
                    continue
                if inst.source == "registry" and inst.reachable:
                    continue  # the registry tells us about these
                if now >= self._next_probe.get(inst.id, 0.0):
                    self._probing.add(inst.id)
                    asyncio.create_task(self._probe(inst))
            await asyncio.sleep(_TICK)

    async def _probe(self, inst: Instance) -> None:
        """GET /v1/models: success puts the instance (back) in rotation with what it serves."""
        assert self.session is not None
        models: list[str] | None = None
        try:
            async with self.session.get(inst.url + "/v1/models") as r:
                if r.status == 200:
                    doc = await r.json(content_type=None)
                    models = [m["id"] for m in doc.get("data", []) if isinstance(m, dict) and "id" in m]
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError, AttributeError, TypeError):
            models = None
        finally:
            self._probing.discard(inst.id)
        if self.pool.instances.get(inst.id) is not inst:
            return  # removed or replaced meanwhile
        s = self.settings
        if models is None:
            if inst.source == "static":
                inst.probe_ok = False
                inst.state = "unhealthy"
                self.pool.refresh(inst)
            self._next_probe[inst.id] = time.monotonic() + s.probe_down_interval_s
            return
        if inst.source == "static":
            self.pool.set_models(inst, models)
            inst.probe_ok = True
            inst.state = "healthy"
        inst.reachable = True
        self._next_probe[inst.id] = time.monotonic() + s.probe_interval_s
        self.pool.wake(inst)

    # -- registry ----------------------------------------------------------------------------
    async def _watch_loop(self, base: str) -> None:
        """Follow the registry's watch stream (the shared client reconnects with backoff, moving
        on to the next registry of a list ``a,b``; until then the last view stays in place)."""
        from corral.registry.client import RegistryClient

        client = RegistryClient(base, timeout_s=self.settings.registry_timeout_s, ssl=self.ssl)
        try:
            async for event in client.watch(self.revision):
                self.registry_connected = True
                self.apply(
                    {
                        "type": event.type,
                        "revision": event.revision,
                        "instance": event.instance,
                        "instances": event.instances,
                    }
                )
        finally:
            self.registry_connected = False
            await client.close()

    def apply(self, event: dict[str, Any]) -> None:
        """Apply one watch event (snapshot, put or delete) to the pool."""
        kind = event.get("type")
        self.revision = max(self.revision, int(event.get("revision", 0)))
        if kind == "snapshot":
            docs = event.get("instances", [])
            fresh = {d["id"]: d for d in docs if d.get("kind", "backend") == "backend"}
            for inst in list(self.pool.instances.values()):
                if inst.source == "registry" and inst.id not in fresh:
                    self.pool.remove(inst.id)
            for d in fresh.values():
                self._put(d)
            od = self.ondemand
            if od is not None:
                models = {d["id"]: d for d in docs if d.get("kind") == "model"}
                for gone_id in od.ids() - set(models):
                    od.remove(gone_id)
                for d in models.values():
                    od.put(d)
        elif kind == "put":
            d = event.get("instance") or {}
            k = d.get("kind", "backend")
            if k == "backend":
                self._put(d)
            elif k == "model" and self.ondemand is not None:
                self.ondemand.put(d)
        elif kind == "delete":
            d = event.get("instance") or {}
            gone = self.pool.instances.get(d.get("id", ""))
            if gone is not None and gone.source == "registry":
                self.pool.remove(gone.id)
            elif d.get("kind") == "model" and self.ondemand is not None:
                self.ondemand.remove(str(d.get("id", "")))

    def _put(self, d: dict[str, Any]) -> None:
        s = self.settings
        url = str(d["url"]).rstrip("/")
        meta = d.get("metadata") or {}
        limit = s.concurrency_for(url) or int(meta.get("max_concurrency") or 0)
        inst = Instance(
            url,
            tuple(d.get("models") or ()),
            source="registry",
            id=str(d["id"]),
            max_concurrency=limit,
            # A draining instance gets nothing new (not routable); in-flight requests finish.
            state="draining" if d.get("draining") else str(d.get("state", "starting")),
            reason=meta.get("out_reason") if isinstance(meta.get("out_reason"), str) else None,
            breaker_failures=s.breaker.failures,
            cooldown_s=s.breaker.cooldown_s,
        )
        self.pool.upsert(inst)
        if self.ondemand is not None:
            self.ondemand.check_models(inst.models)
