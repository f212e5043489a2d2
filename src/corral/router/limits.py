"""Per-key limits: concurrency (per router), and ``rpm``/``tpm`` token buckets.

A bucket holds up to one minute's allowance and refills continuously (``per_minute / 60`` per
second). ``rpm`` takes one token per request at admission. ``tpm`` is charged after the answer,
with the prompt + completion tokens of its usage (the cost is unknown before), so admission only
asks that the bucket is not in debt: a big answer can overdraw it and the key then waits until
the refill has paid the debt back.

Buckets live in this process by default. With ``limits_store = "redis://..."`` (the registry's
Redis, see docs/router.md) they live in Redis instead, shared by every router on it: one Lua
script per check, atomic, using the Redis server's clock so routers' clocks do not matter.
Concurrency stays per router (a slot is a connection of this process).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from corral.router.keys import Key, Keyring

log = logging.getLogger("corral.router")
_monotonic = time.monotonic

# KEYS[1]: the bucket. ARGV: rate per second, capacity, cost, mode, ttl seconds.
# mode "take": take ``cost`` now or say how long until it could; "check": is the bucket out of
# debt (> 0); "charge": take ``cost`` even into debt. Returns the wait in seconds as a string
# (Lua numbers would be truncated to integers on the way back).
BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, cap, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, ts = cap, now end
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
local wait = 0
if ARGV[4] == 'take' then
  if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
elseif ARGV[4] == 'check' then
  if tokens <= 0 then wait = (1 - tokens) / rate end
else
  tokens = tokens - cost
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return tostring(wait)
"""


class Bucket:
    """A token bucket of ``per_minute`` tokens refilled evenly over a minute (monotonic clock)."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens: 0.0 when taken, else the seconds until they would be there."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def check(self, now: float) -> float:
        """0.0 when the bucket is out of debt, else the seconds until it has a token again."""
        self._refill(now)
        return 0.0 if self.tokens > 0 else (1 - self.tokens) / self.rate

    def charge(self, cost: float, now: float) -> None:
        """Take ``cost`` tokens even into debt (tokens spent by an answer already given)."""
        self._refill(now)
        self.tokens -= cost


class Refusal:
    """Why a key may not start a request now: message, code and Retry-After seconds."""

    __slots__ = ("code", "message", "retry_after")

    def __init__(self, message: str, code: str, wait: float) -> None:
        self.message = message
        self.code = code
        self.retry_after = max(1, math.ceil(wait))


class Limits:
    """Checks and charges the limits of keys, in this process or in a shared Redis."""

    def __init__(self, store: str | None = None) -> None:
        self.store = store
        self._r: Any = None
        self._script: Any = None
        self._prefix = "corral:"
        self._pending: set[asyncio.Task[None]] = set()
        if store:
            import redis.asyncio as aioredis

            from corral.registry.redis_store import parse_url

            url, self._prefix = parse_url(store)
            self._r = aioredis.Redis.from_url(url)
            self._script = self._r.register_script(BUCKET_LUA)
        self.shared = self._r is not None  # rates kept in Redis (shared by routers), or here

    def attach(self, keyring: Keyring) -> None:
        """Give each key state the buckets its spec asks for (now and after every reload)."""
        keyring.on_change.append(self._prepare)
        self._prepare(keyring)

    @staticmethod
    def _prepare(keyring: Keyring) -> None:
        for k in keyring.by_name.values():
            st = k.state
            st.rpm_bucket = _resized(st.rpm_bucket, k.rpm)
            st.tpm_bucket = _resized(st.tpm_bucket, k.tpm)

    async def close(self) -> None:
        """Wait for charges still on their way to Redis, then close the connection."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._r is not None:
            await self._r.aclose()

    # -- admission ------------------------------------------------------------------------------
    def admit_local(self, key: Key) -> Refusal | None:
        """Concurrency and (when not shared) rate checks; on success the rpm token is taken.

        The bucket arithmetic is inlined (one clock read, no calls): this runs on every request
        of a limited key, and the DESIGN's budget for keys + limits is a few µs in all.
        """
        st = key.state
        if key.max_concurrency and st.in_flight >= key.max_concurrency:
            return Refusal(
                f"key {key.name!r} has {st.in_flight} requests in flight (max_concurrency "
                f"{key.max_concurrency})",
                "concurrency_limit",
                1,
            )
        if self._r is not None:
            return None
        now = _monotonic()
        if key.tpm:
            b = st.tpm_bucket
            t = b.tokens + (now - b.stamp) * b.rate
            if t > b.capacity:
                t = b.capacity
            b.tokens, b.stamp = t, now
            if t <= 0:
                wait = (1 - t) / b.rate
                return Refusal(f"key {key.name!r} is over its tpm limit ({key.tpm})", "tpm_limit", wait)
        if key.rpm:
            b = st.rpm_bucket
            t = b.tokens + (now - b.stamp) * b.rate
            if t > b.capacity:
                t = b.capacity
            b.stamp = now
            if t < 1:
                b.tokens = t
                wait = (1 - t) / b.rate
                return Refusal(f"key {key.name!r} is over its rpm limit ({key.rpm})", "rpm_limit", wait)
            b.tokens = t - 1
        return None

    async def admit_shared(self, key: Key) -> Refusal | None:
        """The rate checks in Redis (call after :meth:`admit_local` said yes)."""
        if key.tpm:
            wait = await self._run(key, "tpm", key.tpm, 0, "check")
            if wait:
                return Refusal(f"key {key.name!r} is over its tpm limit ({key.tpm})", "tpm_limit", wait)
        if key.rpm:
            wait = await self._run(key, "rpm", key.rpm, 1, "take")
            if wait:
                return Refusal(f"key {key.name!r} is over its rpm limit ({key.rpm})", "rpm_limit", wait)
        return None

    def charge_tokens(self, key: Key, tokens: int) -> None:
        """Charge an answer's tokens to the key's tpm bucket (in the background when shared)."""
        if not key.tpm or tokens <= 0:
            return
        if self._r is None:
            key.state.tpm_bucket.tokens -= tokens  # refilled lazily at the next admission
            return
        task = asyncio.get_running_loop().create_task(self._charge(key, tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _charge(self, key: Key, tokens: int) -> None:
        await self._run(key, "tpm", key.tpm, tokens, "charge")

    async def _run(self, key: Key, kind: str, per_minute: int, cost: int, mode: str) -> float:
        from redis.exceptions import RedisError

        try:
            got = await self._script(
                keys=[f"{self._prefix}limit:{kind}:{key.name}"],
                args=[per_minute / 60.0, per_minute, cost, mode, 120],
            )
        except RedisError as exc:
            # Fail open: a Redis outage must not take the whole fleet down with it.
            log.warning("limits store unreachable, %s not enforced for key %s: %s", kind, key.name, exc)
            return 0.0
        return float(got)


def _resized(bucket: Bucket | None, per_minute: int) -> Bucket | None:
    if not per_minute:
        return None
    if bucket is not None and bucket.capacity == per_minute:
        return bucket
    fresh = Bucket(per_minute)
    if bucket is not None:
        fresh.tokens = min(fresh.capacity, bucket.tokens)  # a reload does not refill a spent bucket
    return fresh
