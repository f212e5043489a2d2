"""The data path: one handler that routes a ``/v1/*`` JSON POST to an instance.

Retries happen only before any byte reached the client: on connect errors, on a backend that
dies before answering, on 429/502/503/504, and on a watchdog timeout when ``retry_on_timeout``
allows (else 504). A backend's 4xx is the client's problem and its 429 means full: neither counts
against the instance. Timeouts count as stalls (``corral.router.health``), not breaker failures.
A stream is relayed chunk by chunk as it arrives (cut on line boundaries only); if the backend
dies mid-stream the client gets an SSE ``error`` event and a clean end of the body. The upstream
request is closed as soon as the client leaves (``corral.router.http`` cancels the handler) or
``/v1/cancel/{id}`` is called.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from typing import TYPE_CHECKING

from corral.router import sse
from corral.router.admission import Admission
from corral.router.attempt import AttemptFailed, NoRetry, Watchdog
from corral.router.config import RouterSettings
from corral.router.context import RequestContext, rename_model
from corral.router.health import Health
from corral.router.http import Connection, Reply, Request
from corral.router.inflight import InFlight
from corral.router.instance import Instance
from corral.router.keys import Key
from corral.router.metrics import Metrics
from corral.router.ondemand import ModelUnavailable, OnDemand
from corral.router.pool import Pool, QueueFull, QueueTimeout, Select
from corral.router.responses import error
from corral.router.sink import Sink
from corral.router.upstream import (
    ConnectError,
    Response,
    Upstream,
    UpstreamError,
    UpstreamTimeout,
)

if TYPE_CHECKING:  # imported only when keys are configured (corral.router.app)
    from corral.router.limits import Limits
    from corral.router.tenants import Tenants

_RETRY_STATUS = frozenset((429, 502, 503, 504))
_FAIL_STATUS = frozenset((502, 503, 504))  # count against the circuit breaker (429 is load)
_USAGE_PATHS = ("/v1/chat/completions", "/v1/completions")
_UPSTREAM_ERRORS = (UpstreamError, TimeoutError, OSError)
_decode = json.JSONDecoder().decode
_INCLUDE_USAGE = b'{"stream_options":{"include_usage":true},'
_JSON_HEAD = b" HTTP/1.1\r\nContent-Type: application/json\r\nX-Request-ID: "


class Proxy(Admission):
    """Routes requests; owns the table of requests in flight (for cancel)."""

    limits: Limits  # the keys' rate and concurrency limits (set with the tenants)

    def __init__(
        self,
        settings: RouterSettings,
        pool: Pool,
        metrics: Metrics,
        select: Select,
        tenants: Tenants | None,
        health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.health = health or Health(settings, pool)
        self.pool = pool
        self.metrics = metrics
        self.select = select
        self.tenants = tenants
        if tenants is not None:
            self.limits = tenants.limits
            self._record = tenants.record  # an answer's usage, per key (bound once)
        self.forward_auth = tenants is None  # with router keys, the client's key is ours, not the backend's
        self.upstream = Upstream(dead_peer_s=settings.timeouts.connect)
        # In flight by request id. Clients choose ids: a second request with an id already in
        # flight waits in _same_id (rare) instead of replacing the first one's entry.
        self.requests = InFlight()
        # The fast path of track/untrack, inlined in handle (both dicts are never replaced).
        self._inflight, self._same_id = self.requests.by_id, self.requests.same_id
        self._track, self._untrack = self.requests.track, self.requests.untrack
        self.shutting_down = False
        self.ondemand: OnDemand | None = None  # set by the Router when it follows a registry
        self._ids = itertools.count(1)
        # UUID-shaped (random 80 bits + a counter): llama-cpp-python's server answers 400 to an
        # X-Request-ID that does not parse as a UUID.
        h = os.urandom(10).hex()
        self._id_prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"
        self._default_watchdog = Watchdog(settings, "")
        self._watchdogs = {m: Watchdog(settings, m) for m in settings.timeouts.models}

    async def start(self) -> None:
        """Nothing to open: upstream connections are made on first use and then pooled."""

    async def close(self) -> None:
        """Close the pooled upstream connections."""
        self.upstream.close()

    def new_id(self) -> str:
        """A process-unique request id (cheaper than uuid4 on the hot path)."""
        return self._id_prefix + format(next(self._ids), "012x")

    # -- the handler -------------------------------------------------------------------------
    async def handle(self, request: Request, conn: Connection) -> Reply | None:
        """``POST /v1/*``: parse, route, relay (None: the answer was streamed on ``conn``).

        The body limit is enforced (413) by the server before this runs.
        """
        t0 = time.perf_counter()
        headers = request.headers
        rid = headers.get("x-request-id") or self.new_id()
        tenants = self.tenants
        key: Key | None = None
        if tenants is not None:
            found = tenants.lookup(headers.get("authorization"))
            if isinstance(found, str):
                return error(401, found, rid, "invalid_api_key")
            key = found
        raw = request.body
        try:
            if raw[:1] == b"{" and raw[1:2] != b"\0":
                # What json.loads(bytes) does for UTF-8 (its detect_encoding: not a BOM, no NUL
                # in the first two bytes), minus its Python-level checks: once per request.
                body = _decode(raw.decode("utf-8", "surrogatepass"))
            else:
                body = json.loads(raw)
        except UnicodeDecodeError:
            return error(400, "request body is not valid UTF-8", rid, "invalid_json")
        except ValueError:
            return error(400, "request body is not valid JSON", rid, "invalid_json")
        except RecursionError:  # the C decoder stops at the interpreter's recursion limit
            return error(400, "request body is nested too deeply", rid, "invalid_json")
        if not isinstance(body, dict):
            return error(400, "request body must be a JSON object", rid, "invalid_json")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error(400, "missing 'model' in request body", rid, "missing_model")
        pool = self.pool
        target = pool.aliases.get(model, model)
        if key is not None and not (key.allows(model) or key.allows(target)):
            return self._out_of_scope(key, model, rid)
        od = self.ondemand
        on_demand = od is not None and target in od.entries
        admitted = False
        if on_demand:
            assert od is not None
            if od.needs_hold(target):
                if key is not None and key.limited:
                    # A key over its limits must not wake a model: admit before holding.
                    refused = await self._admit(key, rid)
                    if refused is not None:
                        return refused
                    admitted = True
                try:
                    await od.hold(target)  # wakes the model; a client that leaves cancels this
                except ModelUnavailable as exc:
                    self.metrics.error(target, 503)
                    return error(503, str(exc), rid, exc.code, 5)
        elif target not in pool.by_model:
            return self._no_instances(model, target, rid)
        path = request.raw_path
        stream = body.get("stream") is True
        strip_usage = False
        if target != model:
            body["model"] = target
        if stream and path.startswith(_USAGE_PATHS):
            opts = body.get("stream_options")
            if not (isinstance(opts, dict) and opts.get("include_usage")):
                strip_usage = True
                if target == model and "stream_options" not in body and raw[:1] == b"{" and raw[1:2] != b"\0":
                    # UTF-8 (no NUL after the brace, as UTF-16/32 would have), never empty (it
                    # has "model"): the member goes in front, no json.dumps of a long prompt.
                    raw = _INCLUDE_USAGE + raw[1:]
                else:
                    body["stream_options"] = {
                        **(opts if isinstance(opts, dict) else {}),
                        "include_usage": True,
                    }
                    raw = b""  # re-encoded below
        if target != model or not raw:
            raw = json.dumps(body).encode()
        # The request line and headers, minus Host (per instance): one bytes write upstream.
        head = b"POST " + path.encode() + _JSON_HEAD + rid.encode("utf-8", "surrogateescape")
        if self.forward_auth:
            auth = headers.get("authorization")
            if auth:
                head += b"\r\nAuthorization: " + auth.encode("utf-8", "surrogateescape")
        head += b"\r\nContent-Length: %d\r\n" % len(raw)
        # conn.task: this handler's task (asyncio.current_task() costs a getpid() on 3.11).
        ctx = RequestContext(rid, body, headers.get("x-session-id"), conn.task)
        if target != model:
            ctx.rename = (json.dumps(target).encode(), json.dumps(model).encode())
        # An on-demand model's request counts in flight for it (idle unload waits for it).
        entry = od.started(target) if od is not None and on_demand else None
        if key is not None:
            if key.limited and not admitted:
                limits = self.limits
                refusal = limits.admit_local(key)
                if refusal is None and limits.shared and (key.rpm or key.tpm):
                    refusal = await limits.admit_shared(key)
                if refusal is not None:
                    if entry is not None:
                        OnDemand.ended(entry)
                    return self._refused(key, rid, refusal)
            ctx.key = key
            key.state.in_flight += 1
        # InFlight.track/untrack inlined for the common case (an id not in flight yet).
        inflight = self._inflight
        if inflight.setdefault(rid, ctx) is not ctx:
            self._track(rid, ctx)  # a client reused an id in flight: the side table
        try:
            return await self._route(conn, ctx, target, raw, head, stream, strip_usage, t0)
        finally:
            if key is not None:
                key.state.in_flight -= 1
            if inflight.get(rid) is ctx and not self._same_id:
                del inflight[rid]
            else:
                self._untrack(rid, ctx)
            if entry is not None:
                OnDemand.ended(entry)

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
        pool, rid, settings = self.pool, ctx.request_id, self.settings
        tried: tuple[Instance, ...] = ()
        last = "no healthy instance"
        key = ctx.key
        name, prio = (key.name, key.priority) if key is not None else ("", 0)
        timeout = settings.queue_timeout_s
        timed_out = False
        watchdog = self._watchdogs.get(model, self._default_watchdog)
        for attempt in range(settings.retries + 1):
            try:
                # A free instance is the common case: taken without the coroutine of acquire().
                inst = pool.try_acquire(model, self.select, ctx, tried)
                if inst is None:
                    inst = await pool.acquire(model, self.select, ctx, timeout, tried, name, prio)
                if inst is None and tried:
                    # Every other instance is out: back off a little, then try any again.
                    await asyncio.sleep(0.05 * attempt * (0.5 + random.random()))
                    tried = ()
                    inst = await pool.acquire(model, self.select, ctx, timeout, (), name, prio)
            except QueueFull:
                self.metrics.error(model, 503)
                return error(503, f"too many requests queued for {model!r}", rid, "queue_full", 1)
            except QueueTimeout:
                self.metrics.error(model, 503)
                return error(503, f"no instance of {model!r} freed up in time", rid, "queue_timeout", 1)
            except asyncio.CancelledError:
                if ctx.prefill is not None:
                    ctx.prefill.finish()  # selected as the client left: never sent
                if not ctx.cancelled:
                    raise
                return self._cancelled(ctx, model)
            if inst is None:
                break
            last_try = attempt == settings.retries
            try:
                return await self._attempt(
                    conn, ctx, inst, model, raw, head, stream, strip_usage, t0, last_try, watchdog
                )
            except AttemptFailed as exc:
                last = str(exc)
                timed_out = exc.timeout
                tried = (*tried, inst)
                self.metrics.retry(model)
            except NoRetry as exc:  # timed out, no byte sent, retry_on_timeout off: 504 at once
                self.metrics.request(model, inst.url, 504, time.perf_counter() - t0)
                return error(504, str(exc), rid, "upstream_timeout")
            except asyncio.CancelledError:
                if not ctx.cancelled:
                    raise
                return self._cancelled(ctx, model)
            finally:
                pool.release(inst)
                if ctx.prefill is not None:
                    ctx.prefill.finish()  # this attempt's prompt is computed (or never will be)
        if timed_out:
            self.metrics.error(model, 504)
            return error(504, f"model {model!r}: {last}", rid, "upstream_timeout")
        self.metrics.error(model, 503)
        return error(503, f"model {model!r}: {last}", rid, "no_healthy_instance", 1)

    def _stalled(
        self, inst: Instance, exc: UpstreamTimeout, watchdog: Watchdog, when: str = ""
    ) -> AttemptFailed:
        """Count a watchdog timeout against ``inst``; the attempt to raise (retried or not)."""
        self.health.on_stall(inst)
        message = f"{inst.url}: {exc}{when}"
        if not watchdog.retry:
            raise NoRetry(message)
        return AttemptFailed(message, timeout=True)

    def _cancelled(self, ctx: RequestContext, model: str) -> Reply:
        """``/v1/cancel`` cancelled this handler before anything was sent: answer 499."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if self.shutting_down:
            self.metrics.error(model, 503)
            return error(503, "the router is shutting down", ctx.request_id, "shutting_down", 1)
        self.metrics.error(model, 499)
        return error(499, f"request {ctx.request_id} was cancelled", ctx.request_id, "cancelled")

    async def _attempt(
        self,
        conn: Connection,
        ctx: RequestContext,
        inst: Instance,
        model: str,
        raw: bytes,
        head: bytes,
        stream: bool,
        strip_usage: bool,
        t0: float,
        last_try: bool,
        watchdog: Watchdog,
    ) -> Reply | None:
        up = self.upstream
        hold = ctx.hold
        if hold is not None:  # cache_aware: reuse a prefill in flight there once it is done
            ctx.hold = None
            self.metrics.prefill_wait(model)
            await hold.wait()
        try:
            resp = await up.request(
                inst.url, head + up.host_header(inst.url), raw, watchdog.stream if stream else watchdog.plain
            )
        except UpstreamTimeout as exc:
            raise self._stalled(inst, exc, watchdog) from None
        except ConnectError as exc:
            inst.on_failure(connect=True)
            raise AttemptFailed(f"{inst.url}: cannot connect ({exc.os_error})") from None
        except _UPSTREAM_ERRORS as exc:
            inst.on_failure()
            raise AttemptFailed(f"{inst.url}: {type(exc).__name__}") from None
        try:
            status = resp.status
            if status in _RETRY_STATUS and not last_try:
                if status in _FAIL_STATUS:
                    inst.on_failure()
                raise AttemptFailed(f"{inst.url}: HTTP {status}")
            ctype = resp.content_type
            if ctype.startswith(b"text/event-stream"):
                await self._relay(conn, ctx, inst, model, resp, ctype, strip_usage, t0, watchdog)
                return None
            try:
                data = await resp.read()
            except UpstreamTimeout as exc:
                raise self._stalled(inst, exc, watchdog) from None
            except _UPSTREAM_ERRORS as exc:
                inst.on_failure()
                raise AttemptFailed(f"{inst.url}: {type(exc).__name__} while reading the answer") from None
            if status < 500:
                inst.on_success()
                if status == 200:
                    usage = sse.usage_at(data)
                    if usage is not None:
                        self.metrics.usage(model, *usage)
                        if ctx.key is not None:
                            self._record(ctx.request_id, ctx.key, model, usage[0], usage[1])
            else:
                inst.on_failure()
            elapsed = time.perf_counter() - t0
            if status == 200:
                inst.observe(elapsed)
            self.metrics.request(model, inst.url, status, elapsed)
            if ctx.rename is not None:
                data = rename_model(data, ctx.rename)
            extra = b"X-Request-ID: " + ctx.rid_bytes() + b"\r\n"
            if resp.retry_after is not None:
                extra += b"Retry-After: " + resp.retry_after + b"\r\n"
            return Reply(status, data, ctype, extra)
        finally:
            resp.release()

    async def _relay(
        self,
        conn: Connection,
        ctx: RequestContext,
        inst: Instance,
        model: str,
        resp: Response,
        ctype: bytes,
        strip_usage: bool,
        t0: float,
        watchdog: Watchdog,
    ) -> None:
        """Relay an SSE answer; the response head goes out with the first upstream bytes.

        After the first piece, pieces go from the upstream parser's callback straight to the
        client's transport (``Sink``): no task switch and no ``await`` per chunk.
        """
        # Wait for the first bytes before answering: until then a dead backend can still be retried.
        try:
            first = await resp.readany()
        except UpstreamTimeout as exc:
            raise self._stalled(inst, exc, watchdog, " before the first token") from None
        except _UPSTREAM_ERRORS as exc:
            inst.on_failure()
            raise AttemptFailed(f"{inst.url}: {type(exc).__name__} before the first byte") from None
        if not first:
            inst.on_failure()
            raise AttemptFailed(f"{inst.url}: stream ended before the first byte")
        if ctx.prefill is not None:
            ctx.prefill.finish()  # its prompt is in the engine's cache now
        metrics = self.metrics
        rid_line = b"X-Request-ID: " + ctx.rid_bytes() + b"\r\n"
        sink = Sink(conn, resp, strip_usage, ctx.rename)
        status = resp.status
        started = False
        try:
            conn.stream_start(status, ctype, rid_line, sink.cut(first))  # head + first piece: one write
            started = True
            ttft = time.perf_counter() - t0
            inst.observe(ttft)
            metrics.first_token(model, ttft)
            resp.relay(sink)
            try:
                await resp.wait_end()
            except UpstreamTimeout as exc:
                self.health.on_stall(inst)
                status = 504
                # The upstream is already aborted (the backend sees the disconnect and stops).
                conn.stream_end(
                    sse.error_event(f"backend {inst.url} stalled: {exc}", 504, "upstream_timeout")
                )
            except _UPSTREAM_ERRORS as exc:
                inst.on_failure()
                status = 502
                conn.stream_end(
                    sse.error_event(f"backend {inst.url} failed mid-stream: {type(exc).__name__}")
                )
            else:
                conn.stream_end(sink.carry)
                inst.on_success()
        except ConnectionResetError:
            status = 499  # the client left; closing resp (finally in _attempt) stops the backend
        except asyncio.CancelledError:
            if not ctx.cancelled:
                metrics.request(model, inst.url, 499, time.perf_counter() - t0)
                raise  # the client left and the server cancelled us
            status = 499
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if self.shutting_down:
                event = sse.error_event("the router is shutting down", 503, "shutting_down")
            else:
                event = sse.error_event(f"request {ctx.request_id} was cancelled", 499, "cancelled")
            try:
                if not started:
                    conn.stream_start(200, ctype, rid_line, b"")
                conn.stream_end(event)
            except ConnectionResetError:
                pass
        finally:
            conn.on_resume = None
        if sink.usage is not None:
            metrics.usage(model, *sink.usage)
            if ctx.key is not None:
                self._record(ctx.request_id, ctx.key, model, sink.usage[0], sink.usage[1])
        metrics.request(model, inst.url, status, time.perf_counter() - t0)

    # -- requests in flight: self.requests (corral.router.inflight) -------------------------
    def abort_all(self) -> int:
        """Shutdown past the drain timeout: end every request in flight (streams get an SSE
        error event, others a 503). Returns how many were aborted."""
        self.shutting_down = True
        return self.requests.cancel_all()
