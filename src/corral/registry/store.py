"""Where instances live: the ``Store`` protocol and the in-memory store with leases.

Leases: each instance has a deadline (monotonic clock inside, absolute Unix time on the wire and
in the snapshot). One sweeper task sleeps until the nearest deadline, held in a heap; a heartbeat
only moves the instance's deadline, and a heap entry found stale when it comes due is pushed
again with the current deadline. So a thousand heartbeats a second cost no heap work and no
wake-ups, and an expiry is noticed at its deadline, not at the next scan.

A pure lease renewal is not a change: it bumps no revision and sends no event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from corral.errors import CorralError
from corral.registry import snapshot as snap
from corral.registry.events import DEFAULT_HISTORY, EventLog
from corral.registry.models import HeartbeatIn, InstanceIn, valid_id
from corral.registry.watch import stream

log = logging.getLogger("corral.registry")

# Fields whose change is an event (and a revision); lease renewals are not.
CONTENT_KEYS = ("service", "kind", "url", "models", "state", "draining", "metadata", "lease_ttl_s")


class StoreUnavailable(CorralError):
    """The store's backing service (Redis) cannot be reached; the API answers 503."""


class Store(Protocol):
    """What the HTTP layer needs from a store (in-memory here, Redis in ``redis_store``)."""

    @property
    def revision(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def register(self, spec: InstanceIn) -> dict[str, Any]: ...

    async def heartbeat(self, instance_id: str, change: HeartbeatIn | None) -> dict[str, Any] | None: ...

    async def update(self, instance_id: str, change: HeartbeatIn) -> dict[str, Any] | None: ...

    async def delete(self, instance_id: str) -> int | None: ...

    async def get(self, instance_id: str) -> dict[str, Any] | None: ...

    async def list(self) -> tuple[list[dict[str, Any]], int]: ...

    def watch(self, since: int) -> AsyncIterator[bytes]: ...

    def close_watchers(self) -> None: ...


def default_id(spec: InstanceIn) -> str:
    """A stable id from kind and URL, so a client that lost its id re-registers the same instance."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.service).strip("-")[:60] or "instance"
    digest = hashlib.sha1(f"{spec.kind} {spec.url}".encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def new_instance(iid: str, spec: InstanceIn, old: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """The instance document a registration makes (keeping ``old``'s registration time)."""
    return {
        "id": iid,
        "service": spec.service,
        "kind": spec.kind,
        "url": spec.url,
        "models": list(spec.models),
        "state": spec.state,
        "draining": False,  # a registration is a (new) process: it starts in rotation
        "metadata": dict(spec.metadata),
        "registered_at": old["registered_at"] if old else now,
        "last_heartbeat": now,
        "lease_ttl_s": spec.lease_ttl_s,
        "expires_at": now + spec.lease_ttl_s,
    }


def content_changed(old: dict[str, Any] | None, inst: dict[str, Any]) -> bool:
    """Whether a registration changed more than the lease (then it is an event)."""
    return old is None or any(old.get(k) != inst.get(k) for k in CONTENT_KEYS)


def lease_reply(inst: dict[str, Any], revision: int) -> dict[str, Any]:
    """What ``register`` answers."""
    return {
        "id": inst["id"],
        "lease_ttl_s": inst["lease_ttl_s"],
        "expires_at": inst["expires_at"],
        "revision": revision,
        "instance": inst,
    }


def apply_change(inst: dict[str, Any], change: HeartbeatIn, merge: bool) -> bool:
    """Apply ``change`` to ``inst`` in place (metadata merged when ``merge``, a null value deletes
    a key); whether its content changed."""
    new: dict[str, Any] = {}
    draining = getattr(change, "draining", None)  # PATCH only (InstancePatch), never a heartbeat
    if draining is not None and draining != inst.get("draining", False):
        new["draining"] = draining
    if change.state is not None and change.state != inst["state"]:
        new["state"] = change.state
    if change.models is not None and change.models != inst["models"]:
        new["models"] = list(change.models)
    if change.metadata is not None:
        meta = {**inst["metadata"], **change.metadata} if merge else dict(change.metadata)
        meta = {k: v for k, v in meta.items() if v is not None}
        if meta != inst["metadata"]:
            new["metadata"] = meta  # replaced, never mutated: snapshots copy shallowly
    inst.update(new)
    return bool(new)


class MemoryStore:
    """Instances in a dict, changes in an :class:`EventLog`, optional snapshot file."""

    def __init__(self, state_dir: Path | None = None, history: int = DEFAULT_HISTORY) -> None:
        self._instances: dict[str, dict[str, Any]] = {}
        self._deadline: dict[str, float] = {}  # id -> time.monotonic() deadline
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._writer: snap.SnapshotWriter | None = None
        revision = int(time.time() * 1000)  # never below a previous run's, even without a snapshot
        if state_dir is not None:
            path = Path(state_dir) / snap.FILE_NAME
            revision = max(revision, self._load(path))
            self._writer = snap.SnapshotWriter(path, self.dump)
        self.events = EventLog(revision=revision, history=history)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the lease sweeper and the snapshot writer."""
        self._wake = asyncio.Event()
        self._sweeper = asyncio.create_task(self._sweep(), name="registry-leases")
        if self._writer is not None:
            self._writer.start()

    async def close(self) -> None:
        """Stop background work and write the final snapshot."""
        self.close_watchers()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._writer is not None:
            await self._writer.close()

    def close_watchers(self) -> None:
        """End every open watch stream."""
        self.events.close_all()

    @property
    def revision(self) -> int:
        """The revision of the latest change."""
        return self.events.revision

    # -- operations --------------------------------------------------------------------------

    async def register(self, spec: InstanceIn) -> dict[str, Any]:
        """Add or replace an instance; the same id and content only renews the lease."""
        iid = spec.id or default_id(spec)
        old = self._instances.get(iid)
        inst = new_instance(iid, spec, old, time.time())
        self._instances[iid] = inst
        self._set_deadline(iid, spec.lease_ttl_s)
        if content_changed(old, inst):
            self._changed("put", inst)
        else:
            self._lease_moved()
        return lease_reply(inst, self.revision)

    async def heartbeat(self, instance_id: str, change: HeartbeatIn | None) -> dict[str, Any] | None:
        """Renew the lease (and apply ``change``); None when the id is unknown."""
        inst = self._instances.get(instance_id)
        if inst is None:
            return None
        now = time.time()
        inst["last_heartbeat"] = now
        inst["expires_at"] = now + inst["lease_ttl_s"]
        self._set_deadline(instance_id, inst["lease_ttl_s"])
        if change is None or not self._apply(inst, change, merge=False):
            self._lease_moved()
        return {k: inst[k] for k in ("id", "lease_ttl_s", "expires_at")} | {"revision": self.revision}

    async def update(self, instance_id: str, change: HeartbeatIn) -> dict[str, Any] | None:
        """Change state/models/metadata (metadata merged, null deletes a key); None when unknown."""
        inst = self._instances.get(instance_id)
        if inst is None:
            return None
        self._apply(inst, change, merge=True)
        return {"instance": inst, "revision": self.revision}

    async def delete(self, instance_id: str) -> int | None:
        """Remove an instance; the new revision, or None when the id is unknown."""
        if instance_id not in self._instances:
            return None
        return self._remove(instance_id)

    async def get(self, instance_id: str) -> dict[str, Any] | None:
        """One instance, or None."""
        return self._instances.get(instance_id)

    async def list(self) -> tuple[list[dict[str, Any]], int]:
        """Every instance and the current revision."""
        return list(self._instances.values()), self.revision

    def watch(self, since: int) -> AsyncIterator[bytes]:
        """The watch stream from ``since`` (see :func:`corral.registry.watch.stream`)."""
        return stream(self.events, since, lambda: list(self._instances.values()))

    def dump(self) -> dict[str, Any]:
        """The snapshot document (copies: it may be written from another thread)."""
        return {"revision": self.revision, "instances": [dict(i) for i in self._instances.values()]}

    # -- internals ---------------------------------------------------------------------------

    def _apply(self, inst: dict[str, Any], change: HeartbeatIn, merge: bool) -> bool:
        if not apply_change(inst, change, merge):
            return False
        self._changed("put", inst)
        return True

    def _changed(self, kind: str, inst: dict[str, Any]) -> int:
        rev = self.events.append(kind, inst)
        if self._writer is not None:
            self._writer.mark(changed=True)
        return rev

    def _lease_moved(self) -> None:
        if self._writer is not None:
            self._writer.mark(changed=False)

    def _remove(self, instance_id: str, reason: str = "deregistered") -> int:
        inst = self._instances.pop(instance_id)
        self._deadline.pop(instance_id, None)
        log.info("instance %s (%s %s) removed: %s", instance_id, inst["service"], inst["url"], reason)
        return self._changed("delete", inst)

    def _set_deadline(self, instance_id: str, ttl: float) -> None:
        deadline = time.monotonic() + ttl
        old = self._deadline.get(instance_id)
        self._deadline[instance_id] = deadline
        if old is None or deadline < old:
            # A later deadline needs no heap entry: the earlier one, when due, re-queues it.
            self._push(deadline, instance_id)

    def _push(self, deadline: float, instance_id: str) -> None:
        if not self._heap or deadline < self._heap[0][0]:
            self._wake.set()
        heapq.heappush(self._heap, (deadline, instance_id))

    async def _sweep(self) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races a wake-up.
        while True:
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                _, iid = heapq.heappop(self._heap)
                deadline = self._deadline.get(iid)
                if deadline is None:
                    continue  # deleted meanwhile
                if deadline > now:
                    heapq.heappush(self._heap, (deadline, iid))
                else:
                    self._remove(iid, reason="lease expired")
            self._wake.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _load(self, path: Path) -> int:
        doc = snap.load(path)
        if doc is None:
            return 0
        now, mono = time.time(), time.monotonic()
        kept = 0
        for inst in doc["instances"]:
            try:
                iid, expires_at = inst["id"], float(inst["expires_at"])
            except (KeyError, TypeError, ValueError):
                continue
            if expires_at <= now or not valid_id(str(iid)):
                continue  # its lease ran out while the registry was down
            self._instances[iid] = inst
            self._deadline[iid] = mono + (expires_at - now)
            heapq.heappush(self._heap, (self._deadline[iid], iid))
            kept += 1
        log.info("loaded snapshot %s: %d live instance(s)", path, kept)
        rev = doc.get("revision", 0)
        return rev if isinstance(rev, int) else 0
