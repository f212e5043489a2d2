"""Keep the registry's view of this sitter and its backend true: register, push, heartbeat.

One task owns the conversation. A state change wakes it at once (the router must stop sending
to a crashed backend within milliseconds, not at the next heartbeat); otherwise it heartbeats
every ``heartbeat_s`` with a lease of three heartbeats. A 404 on heartbeat means the registry
forgot us (it restarted): register again. An unreachable registry never touches the backend: we
retry with backoff and re-register when it answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from corral.sitter.backoff import Backoff

log = logging.getLogger("corral.sitter")

_TIMEOUT = aiohttp.ClientTimeout(total=3)


class RegistryRejected(Exception):
    """The registry answered with an unexpected status."""


@dataclass
class Instance:
    """One registered instance as this sitter wants the registry to see it."""

    id: str
    service: str
    kind: str  # "backend" | "sitter"
    url: str
    state: str = "starting"
    models: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    registered: bool = False
    dirty: bool = False
    last_beat: float = 0.0  # monotonic

    def document(self, lease_ttl_s: float) -> dict[str, Any]:
        """Body of ``POST /v1/instances``."""
        return {
            "id": self.id,
            "service": self.service,
            "kind": self.kind,
            "url": self.url,
            "models": self.models,
            "state": self.state,
            "metadata": self.metadata,
            "lease_ttl_s": lease_ttl_s,
        }


class Registration:
    """Registers ``instances`` with the registry at ``base_url`` and keeps them current."""

    def __init__(
        self,
        base_url: str,
        instances: list[Instance],
        heartbeat_s: float,
        token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.instances = {i.id: i for i in instances}
        self.heartbeat_s = heartbeat_s
        self.lease_ttl_s = 3 * heartbeat_s
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._wake = asyncio.Event()
        self._backoff = Backoff(initial=0.1, maximum=max(0.1, min(5.0, heartbeat_s)))
        self._session: aiohttp.ClientSession | None = None
        self.last_ok: float | None = None  # time.time()
        self.last_error: str | None = None
        self._stopped = False

    def update(self, instance_id: str, **changes: Any) -> None:
        """Change what the registry should show for one instance; pushed at once."""
        inst = self.instances[instance_id]
        for key, value in changes.items():
            if key == "metadata":
                inst.metadata = {**inst.metadata, **value}
            else:
                setattr(inst, key, value)
        inst.dirty = True
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """For ``/info``: whether each instance is registered and how the last call went."""
        return {
            "url": self.base_url,
            "registered": {i.id: i.registered for i in self.instances.values()},
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "lease_ttl_s": self.lease_ttl_s,
        }

    async def run(self) -> None:
        """Sync forever (cancel to stop); never raises for registry trouble."""
        self._session = aiohttp.ClientSession(timeout=_TIMEOUT, headers=self._headers)
        try:
            while not self._stopped:
                self._wake.clear()
                try:
                    delay = await self._sync()
                    self._backoff.reset()
                    if self.last_error is not None:
                        log.info("registry %s reachable again", self.base_url)
                    self.last_error = None
                    self.last_ok = time.time()
                except (aiohttp.ClientError, TimeoutError, RegistryRejected) as exc:
                    delay = self._backoff.next()
                    message = f"{type(exc).__name__}: {exc}".rstrip(": ")
                    if message != self.last_error:
                        log.warning("registry %s: %s (retrying)", self.base_url, message)
                    self.last_error = message
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                except TimeoutError:
                    pass
        finally:
            await self._session.close()

    async def _sync(self) -> float:
        """One pass over the instances; returns seconds until the next heartbeat is due."""
        now = time.monotonic()
        for inst in self.instances.values():  # the backend first: its state is what routers use
            if not inst.registered:
                await self._register(inst)
            elif inst.dirty or now - inst.last_beat >= self.heartbeat_s:
                await self._heartbeat(inst)
        due = min(i.last_beat for i in self.instances.values()) + self.heartbeat_s
        return max(0.0, due - time.monotonic())

    async def _register(self, inst: Instance) -> None:
        assert self._session is not None
        inst.dirty = False
        try:
            async with self._session.post(
                f"{self.base_url}/v1/instances", json=inst.document(self.lease_ttl_s)
            ) as r:
                if r.status >= 300:
                    raise RegistryRejected(f"register {inst.id}: HTTP {r.status} {(await r.text())[:200]}")
        except BaseException:
            inst.dirty = True
            raise
        inst.registered = True
        inst.last_beat = time.monotonic()
        log.info("registered %s %s (%s) state=%s", inst.kind, inst.id, inst.url, inst.state)

    async def _heartbeat(self, inst: Instance) -> None:
        assert self._session is not None
        body: dict[str, Any] = {}
        if inst.dirty:
            body = {"state": inst.state, "models": inst.models, "metadata": inst.metadata}
        inst.dirty = False
        try:
            url = f"{self.base_url}/v1/instances/{inst.id}/heartbeat"
            async with self._session.put(url, json=body) as r:
                if r.status == 404:  # the registry forgot us (restart, expired lease)
                    inst.registered = False
                    log.info("registry forgot %s; registering again", inst.id)
                    await self._register(inst)
                    return
                if r.status >= 300:
                    raise RegistryRejected(f"heartbeat {inst.id}: HTTP {r.status} {(await r.text())[:200]}")
        except BaseException:
            inst.dirty = inst.dirty or bool(body)
            raise
        inst.last_beat = time.monotonic()

    async def deregister(self, timeout: float = 2.0) -> None:
        """Remove every instance (best effort, bounded by ``timeout``); stops the sync loop."""
        self._stopped = True
        self._wake.set()
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout), headers=self._headers
        ) as s:
            for inst in self.instances.values():
                try:
                    async with s.delete(f"{self.base_url}/v1/instances/{inst.id}") as r:
                        if r.status < 300 or r.status == 404:
                            inst.registered = False
                            log.info("deregistered %s", inst.id)
                        else:
                            log.warning("deregister %s: HTTP %s", inst.id, r.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("deregister %s: %s", inst.id, exc or type(exc).__name__)
