"""Keeping one registration alive: register, heartbeat, re-register when forgotten.

The heartbeater holds the *desired* registration (state, models, metadata). A change is pushed
at once; while the registry is unreachable it retries with backoff, and whatever is desired on
reconnect is what gets sent (never a stale state). A 404 (the registry restarted without
state, or the lease ran out) re-registers under the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from corral.registry.client import (
    NotRegistered,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
    backoff,
)
from corral.registry.models import DEFAULT_HEARTBEAT_S

log = logging.getLogger("corral.registry.client")


class Heartbeater:
    """Registers an instance and keeps its lease (use ``async with`` or ``start``/``stop``)."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        service: str,
        url: str,
        models: Iterable[str] = (),
        kind: str = "backend",
        state: str = "starting",
        metadata: dict[str, Any] | None = None,
        instance_id: str | None = None,
        interval_s: float = DEFAULT_HEARTBEAT_S,
        lease_ttl_s: float | None = None,
    ) -> None:
        self.client = client
        self.service, self.url, self.kind = service, url, kind
        self.models, self.state, self.metadata = list(models), state, dict(metadata or {})
        self.id = instance_id
        self.interval_s = interval_s
        self.lease_ttl_s = lease_ttl_s if lease_ttl_s is not None else 3 * interval_s
        self.registered = asyncio.Event()  # set while the registry holds our lease
        self.registrations = 0  # how many times we (re-)registered
        self._version = 0  # bumped by set(); _sent is the version the registry has
        self._sent = -1
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def set(
        self,
        *,
        state: str | None = None,
        models: Iterable[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Change the desired registration; pushed to the registry right away (or on reconnect)."""
        if state is not None:
            self.state = state
        if models is not None:
            self.models = list(models)
        if metadata is not None:
            self.metadata = dict(metadata)
        self._version += 1
        self._wake.set()

    def start(self) -> None:
        """Run the loop in a background task."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"heartbeat-{self.service}")

    async def stop(self, deregister: bool = True) -> None:
        """Stop heartbeating; ``deregister`` removes the instance (best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if deregister and self.id is not None:
            with contextlib.suppress(RegistryError):
                await self.client.deregister(self.id)
        self.registered.clear()

    async def __aenter__(self) -> Heartbeater:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Register, then heartbeat every ``interval_s`` until cancelled."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self._beat()
                failures = 0
                wait = self.interval_s
            except NotRegistered:
                log.info("registry forgot %s; registering again", self.id)
                self.registered.clear()
                self._sent = -1
                continue
            except RegistryError as exc:
                failures += 1
                self.registered.clear()
                self._sent = -1  # re-send the desired state once the registry answers again
                # Up to half an interval: a registry that is back (a healed link, a restarted
                # registry) is found well within the lease, so the instance is back in rotation
                # about as fast as its host is back on the network.
                wait = backoff(failures, 0.1, max(0.1, self.interval_s / 2))
                # While starting (never registered yet) the registry may still be booting: that
                # is normal, so one INFO line; a registry lost later is worth a WARNING.
                first = logging.INFO if self.registrations == 0 else logging.WARNING
                level = first if failures == 1 else logging.DEBUG
                log.log(
                    level, "registry heartbeat for %s failed (%s); retrying in %.1fs", self.service, exc, wait
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _beat(self) -> None:
        version = self._version
        if not self.registered.is_set():
            try:
                await self._register()
            except NotRegistered as exc:  # 404 on register itself is not "forgotten"
                raise RegistryUnavailable(str(exc), exc.status) from exc
        elif self._sent != version:
            assert self.id is not None
            await self.client.heartbeat(self.id, state=self.state, models=self.models, metadata=self.metadata)
        else:
            assert self.id is not None
            await self.client.heartbeat(self.id)
        self._sent = version

    async def _register(self) -> None:
        reg = await self.client.register(
            self.service,
            self.url,
            self.models,
            kind=self.kind,
            state=self.state,
            metadata=self.metadata,
            id=self.id,
            lease_ttl_s=self.lease_ttl_s,
        )
        self.id = reg.id
        self.registrations += 1
        self.registered.set()


async def run_heartbeats(client: RegistryClient, **spec: Any) -> None:
    """Register and heartbeat until cancelled, then deregister (``spec``: Heartbeater's arguments)."""
    hb = Heartbeater(client, **spec)
    try:
        await hb.run()
    finally:
        if hb.id is not None:
            with contextlib.suppress(RegistryError):
                await asyncio.shield(client.deregister(hb.id))
