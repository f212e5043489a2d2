"""The Redis store: several registries on one Redis share one view (DESIGN.md "Beyond one machine").

Instances are keys whose TTL is the lease; every change is one Lua script that bumps the shared
revision counter and appends the event to a Redis Stream (see ``redis_scripts``). Each registry
follows the stream into a local :class:`EventLog` (prefilled with the stream's tail, so a watcher
resumes with ``since=REV`` on any registry, also after a restart), and its watch streams fan
out from there exactly as with the memory store.

Lease expiry: Redis deletes the key; keyspace notifications (``notify-keyspace-events Ex``, set
with CONFIG SET when the server allows it) tell every registry at once, and the one whose script
removes the id from the index emits the ``delete``. A periodic sweep catches what a lost
notification (or a server that forbids CONFIG) misses.

Reads (list, get) go to Redis, so ``/v1/instances`` is the same on every registry. While Redis
is unreachable a registry keeps serving what it knows: reads (and the snapshot a new watcher
starts with) answer from a local view kept from the last snapshot and the followed stream;
writes answer 503 and sitters retry them.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from corral.errors import ConfigError
from corral.registry import redis_scripts as lua
from corral.registry.events import DEFAULT_HISTORY, EventLog
from corral.registry.models import HeartbeatIn, InstanceIn
from corral.registry.store import (
    StoreUnavailable,
    apply_change,
    content_changed,
    default_id,
    lease_reply,
    new_instance,
)
from corral.registry.watch import stream

log = logging.getLogger("corral.registry")

DEFAULT_PREFIX = "corral:registry:"
SWEEP_S = 10.0  # with keyspace notifications the sweep is only a safety net
SWEEP_NO_NOTIFY_S = 1.0  # without them it is how expiry is noticed
_CAS_TRIES = 20
FOLLOW_BLOCK_MS = 1000
T = TypeVar("T")


def parse_url(url: str) -> tuple[str, str]:
    """Split ``redis://host:port/db?prefix=P`` into the URL redis-py accepts and the key prefix."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"store URL {url!r} must start with redis://, rediss:// or unix://", field="store")
    query = parse_qsl(parts.query)
    prefix = next((v for k, v in query if k == "prefix"), DEFAULT_PREFIX)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisStore:
    """The :class:`~corral.registry.store.Store` protocol over Redis (``redis.asyncio``)."""

    def __init__(self, url: str, history: int = DEFAULT_HISTORY) -> None:
        self.url, prefix = parse_url(url)
        self.history = history
        # redis-py's own annotations are too loose to check against (str | bytes | Any).
        self._r: Any = aioredis.Redis.from_url(self.url)
        self._lease_prefix = prefix + "lease:"
        self._docs, self._rev, self._events = prefix + "docs", prefix + "rev", prefix + "events"
        self._keys = [self._docs, self._rev, self._events]
        self._put = self._r.register_script(lua.PUT)
        self._del = self._r.register_script(lua.DELETE)
        self._hb = self._r.register_script(lua.HEARTBEAT)
        self._sweep = self._r.register_script(lua.SWEEP)
        self._snap = self._r.register_script(lua.SNAPSHOT)
        self._init = self._r.register_script(lua.INIT)
        self.events = EventLog(revision=0, history=history)
        self._tasks: list[asyncio.Task[None]] = []
        self.notifications = False
        self._position = b"0-0"  # the last stream entry copied into the local log
        # The last view read from Redis, kept current from the stream: served while Redis is gone.
        self._known: dict[str, dict[str, Any]] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, load the stream's tail, and follow changes and expiries."""
        try:
            await self._r.ping()
        except RedisError as exc:
            raise StoreUnavailable(f"cannot reach Redis at {redacted(self.url)}: {exc}") from None
        self.notifications = await self._enable_notifications()
        await self._init(keys=[self._rev], args=[int(time.time() * 1000)])
        self._position = await self._load_tail()
        await self._call(self._sweep, [], self._lease_prefix)  # leases that ran out while all were down
        await self.snapshot()  # the local view starts from here; the stream keeps it current
        self._tasks = [asyncio.create_task(self._follow(), name="registry-redis-follow")]
        if self.notifications:
            self._tasks.append(asyncio.create_task(self._expiries(), name="registry-redis-expiries"))
        interval = SWEEP_S if self.notifications else SWEEP_NO_NOTIFY_S
        self._tasks.append(asyncio.create_task(self._sweeper(interval), name="registry-redis-sweep"))
        log.info(
            "redis store %s: revision %d, expiry by %s",
            redacted(self.url),
            self.events.revision,
            "keyspace notifications" if self.notifications else f"a sweep every {interval:g}s",
        )

    async def close(self) -> None:
        """Stop following and close the connections (the state stays in Redis)."""
        self.close_watchers()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._r.aclose()

    def close_watchers(self) -> None:
        """End every open watch stream."""
        self.events.close_all()

    @property
    def revision(self) -> int:
        """The latest revision this registry has seen on the stream."""
        return self.events.revision

    # -- operations --------------------------------------------------------------------------

    async def register(self, spec: InstanceIn) -> dict[str, Any]:
        """Add or replace an instance; the same id and content only renews the lease."""
        iid = spec.id or default_id(spec)
        for _ in range(_CAS_TRIES):
            raw = await self._guard(self._r.get(self._lease_prefix + iid))
            old = json.loads(raw) if raw else None
            inst = new_instance(iid, spec, old, time.time())
            rev = await self._write(iid, raw, inst, _px(spec.lease_ttl_s), content_changed(old, inst))
            if rev >= 0:
                return lease_reply(inst, rev)
        raise StoreUnavailable(f"instance {iid!r} is being changed too fast to register")

    async def heartbeat(self, instance_id: str, change: HeartbeatIn | None) -> dict[str, Any] | None:
        """Renew the lease (and apply ``change``); None when the id is unknown."""
        if change is None:
            got = await self._call(self._hb, [self._lease_prefix + instance_id])
            if got is None:
                return None
            doc, rev = json.loads(got[0]), int(got[1] or 0)
            ttl = doc["lease_ttl_s"]
            return {"id": instance_id, "lease_ttl_s": ttl, "expires_at": time.time() + ttl, "revision": rev}
        done = await self._change(instance_id, change, merge=False, renew=True)
        if done is None:
            return None
        inst, rev = done
        return {k: inst[k] for k in ("id", "lease_ttl_s", "expires_at")} | {"revision": rev}

    async def update(self, instance_id: str, change: HeartbeatIn) -> dict[str, Any] | None:
        """Change state/models/metadata (metadata merged, null deletes a key); None when unknown."""
        done = await self._change(instance_id, change, merge=True, renew=False)
        if done is None:
            return None
        inst, rev = done
        return {"instance": inst, "revision": rev}

    async def delete(self, instance_id: str) -> int | None:
        """Remove an instance; the new revision, or None when the id is unknown."""
        got = await self._call(self._del, [self._lease_prefix + instance_id], instance_id)
        if got is None or not int(got[1]):
            return None  # unknown, or its lease had run out (that delete event went out anyway)
        log.info("instance %s removed: deregistered", instance_id)
        return int(got[0])

    async def get(self, instance_id: str) -> dict[str, Any] | None:
        """One instance, or None (from the local view while Redis is unreachable)."""
        pipe = self._r.pipeline(transaction=True)
        pipe.get(self._lease_prefix + instance_id)
        pipe.pttl(self._lease_prefix + instance_id)
        try:
            raw, pttl = await self._guard(pipe.execute())
        except StoreUnavailable:
            if self._known is None:
                raise
            return self._known.get(instance_id)
        return _with_times(json.loads(raw), pttl, time.time()) if raw else None

    async def list(self) -> tuple[list[dict[str, Any]], int]:
        """Every live instance and the revision they reflect (one atomic read of Redis)."""
        return await self.snapshot()

    async def snapshot(self) -> tuple[builtins.list[dict[str, Any]], int]:
        """Sweep expired leases, then read every instance and the revision atomically. While
        Redis is unreachable: the local view at the latest revision seen."""
        try:
            out = await self._call(self._snap, [], self._lease_prefix)
        except StoreUnavailable as exc:
            if self._known is None:
                raise
            log.warning("serving the last known view (%d instances): %s", len(self._known), exc)
            return builtins.list(self._known.values()), self.events.revision
        now = time.time()
        instances = [
            _with_times(json.loads(out[i]), int(out[i + 1]), now)
            for i in range(1, len(out), 2)
            if int(out[i + 1]) != -2  # -2: gone (expired inside this very script's frozen clock)
        ]
        self._known = {i["id"]: i for i in instances}
        return instances, int(out[0])

    def watch(self, since: int) -> AsyncIterator[bytes]:
        """The watch stream from ``since``; ends quietly when Redis goes away (clients reconnect)."""
        return self._watch(since)

    async def _watch(self, since: int) -> AsyncIterator[bytes]:
        async def snap() -> tuple[int, builtins.list[dict[str, Any]]]:
            instances, rev = await self.snapshot()
            return rev, instances

        try:
            async for line in stream(self.events, since, None, snapshot=snap):
                yield line
        except StoreUnavailable as exc:
            log.warning("ending a watch stream: %s", exc)

    # -- internals ---------------------------------------------------------------------------

    async def _change(
        self, instance_id: str, change: HeartbeatIn, merge: bool, renew: bool
    ) -> tuple[dict[str, Any], int] | None:
        for _ in range(_CAS_TRIES):
            raw = await self._guard(self._r.get(self._lease_prefix + instance_id))
            if raw is None:
                return None
            inst = json.loads(raw)
            changed = apply_change(inst, change, merge)
            if renew:
                now = time.time()
                inst["last_heartbeat"], inst["expires_at"] = now, now + inst["lease_ttl_s"]
            elif not changed:
                return inst, await self._current_revision()
            px = _px(inst["lease_ttl_s"]) if renew else 0
            rev = await self._write(instance_id, raw, inst, px, changed)
            if rev >= 0:
                return inst, rev
        raise StoreUnavailable(f"instance {instance_id!r} is being changed too fast to update")

    async def _write(
        self, iid: str, expected: bytes | None, inst: dict[str, Any], px: int, changed: bool
    ) -> int:
        doc = json.dumps(inst, separators=(",", ":"))
        args = (iid, expected or b"", doc, px, 1 if changed else 0)
        return int(await self._call(self._put, [self._lease_prefix + iid], *args))

    async def _current_revision(self) -> int:
        return int(await self._guard(self._r.get(self._rev)) or 0)

    async def _call(self, script: Any, extra_keys: builtins.list[str], *args: Any) -> Any:
        return await self._guard(script(keys=[*self._keys, *extra_keys], args=[self.history, *args]))

    async def _guard(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except RedisError as exc:
            raise StoreUnavailable(f"Redis at {redacted(self.url)} failed: {exc}") from None

    async def _enable_notifications(self) -> bool:
        """Turn on expired-key events (keeping flags others set); False if CONFIG is forbidden."""
        try:
            flags = (await self._r.config_get("notify-keyspace-events")).get("notify-keyspace-events", "")
            flags = flags.decode() if isinstance(flags, bytes) else str(flags)
            if not ("x" in flags and ("E" in flags or "A" in flags)):
                merged = "".join(sorted(set(flags) | {"E", "x"}))
                await self._r.config_set("notify-keyspace-events", merged)
            return True
        except ResponseError as exc:
            log.warning("cannot enable keyspace notifications (%s); sweeping for expired leases", exc)
            return False

    async def _load_tail(self) -> bytes:
        """Fill the local log with the stream's last ``history`` events; the id to follow from."""
        pipe = self._r.pipeline(transaction=True)
        pipe.get(self._rev)
        pipe.xrevrange(self._events, count=self.history)
        rev, entries = await self._guard(pipe.execute())
        entries.reverse()
        if entries:
            first = _revision(entries[0][0])
            self.events = EventLog(revision=first - 1, history=self.history)
            for eid, fields in entries:
                self.events.add(_revision(eid), fields[b"e"])
            return bytes(entries[-1][0])
        self.events = EventLog(revision=int(rev or 0), history=self.history)
        return b"0-0"

    async def _follow(self) -> None:
        """Copy every new stream entry into the local log (which fans out to the watchers)."""
        await self._retrying("following the event stream", self._follow_once)

    async def _follow_once(self) -> None:
        while True:
            # Block well under redis-py's socket timeout (5 s by default in redis-py 8): a block
            # as long as that timeout races it, and a lost race dropped the connection and
            # stalled the followers (and every watcher behind them) for the retry backoff.
            got = await self._r.xread({self._events: self._position}, count=1000, block=FOLLOW_BLOCK_MS)
            for _, entries in got or []:
                for eid, fields in entries:
                    self.events.add(_revision(eid), fields[b"e"])
                    self._position = eid
                    self._note(fields[b"e"])

    def _note(self, line: bytes) -> None:
        """Keep the local view current with one event line of the stream."""
        if self._known is None:
            return
        try:
            event = json.loads(line)
            inst = event["instance"]
            if event["type"] == "put":
                self._known[inst["id"]] = inst
            elif event["type"] == "delete":
                self._known.pop(inst["id"], None)
        except (ValueError, KeyError, TypeError):
            log.debug("unreadable event line: %r", line[:200])

    async def _expiries(self) -> None:
        await self._retrying("listening for expired leases", self._expiries_once)

    async def _expiries_once(self) -> None:
        db = self._r.connection_pool.connection_kwargs.get("db", 0)
        pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(f"__keyevent@{db}__:expired")
            await self._call(self._sweep, [], self._lease_prefix)  # what expired while subscribing
            prefix = self._lease_prefix.encode()
            async for msg in pubsub.listen():
                key = msg.get("data")
                if isinstance(key, bytes) and key.startswith(prefix):
                    await self._call(self._sweep, [], self._lease_prefix, key[len(prefix) :])
        finally:
            await pubsub.aclose()

    async def _sweeper(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                n = await self._call(self._sweep, [], self._lease_prefix)
                if n:
                    log.info("%d instance(s) removed: lease expired", n)
            except StoreUnavailable as exc:
                log.warning("lease sweep failed: %s", exc)

    async def _retrying(self, what: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` forever, reconnecting with backoff when Redis goes away."""
        delay = 0.1
        while True:
            began = time.monotonic()
            try:
                await body()
                return
            except (RedisError, StoreUnavailable) as exc:
                if time.monotonic() - began > 5.0:
                    delay = 0.1  # it had been working: a fresh failure, not the same outage
                log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _px(ttl_s: float) -> int:
    return max(1, round(ttl_s * 1000))


def _revision(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _with_times(inst: dict[str, Any], pttl_ms: int, now: float) -> dict[str, Any]:
    """Lease renewals only move the key's TTL: derive the instance's times from it."""
    if pttl_ms >= 0:
        inst["expires_at"] = now + pttl_ms / 1000
        inst["last_heartbeat"] = inst["expires_at"] - inst["lease_ttl_s"]
    return inst


def check_reachable(url: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one line and no traceback, when the Redis of ``url`` does not answer."""

    async def ping() -> None:
        client: Any = aioredis.Redis.from_url(parse_url(url)[0], socket_connect_timeout=timeout_s)
        try:
            await client.ping()
        except RedisError as exc:
            raise StoreUnavailable(f"cannot reach Redis at {redacted(url)}: {exc}") from None
        finally:
            await client.aclose()

    asyncio.run(ping())
