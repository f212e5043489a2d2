"""Wires the router's parts, routes requests to their handlers, and runs it all on uvloop."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from corral.errors import ConfigError
from corral.router import peers, policies
from corral.router.admin import Admin
from corral.router.config import RouterSettings, auth_line, auth_problem, keys_env, parse_keys
from corral.router.discovery import Discovery
from corral.router.health import Health
from corral.router.http import Connection, Handler, Reply, Request, Server
from corral.router.metrics import Metrics, make_renderer
from corral.router.models_view import model_card, model_cards, model_names
from corral.router.ondemand import OnDemand
from corral.router.pool import Pool
from corral.router.proxy import Proxy
from corral.router.responses import error, json_response

if TYPE_CHECKING:
    from corral.router.engine_load import EngineLoad
    from corral.router.tenants import Tenants

log = logging.getLogger("corral.router")
_PROM_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class Router:
    """The router's parts wired together: pool, discovery, proxy, metrics, admin."""

    def __init__(self, settings: RouterSettings, api_keys: frozenset[str] = frozenset()) -> None:
        self.settings = settings
        self.pool = Pool(queue_size=settings.queue_size, aliases=settings.aliases)
        self.metrics = Metrics()
        self.pool.on_wait = self.metrics.queue_wait
        self.tenants: Tenants | None = None
        if settings.keys or settings.keys_file or api_keys:  # Tenants.build's test; lazily imported
            from corral.router.tenants import Tenants

            self.tenants = Tenants.build(settings, api_keys)
        self.outliers = Health(settings, self.pool)
        self.proxy = Proxy(
            settings,
            self.pool,
            self.metrics,
            policies.load(settings.policy, settings),
            self.tenants,
            self.outliers,
        )
        self.ondemand = OnDemand(self.pool, settings.queue_size)
        self.proxy.ondemand = self.ondemand
        self.discovery = Discovery(settings, self.pool, self.ondemand)
        every = settings.engine_metrics_every()
        probe = settings.policy == "cache_aware" and settings.cache_aware.speed_probe
        self.engine_load: EngineLoad | None = None
        if every or probe:
            from corral.router.engine_load import EngineLoad

            ca = settings.cache_aware
            self.engine_load = EngineLoad(self.pool, every, probe, ca.reprobe_s, ca.speed_slack)
        self.admin = Admin(self.pool, self.discovery, settings.admin_token, self.proxy.new_id, self.ondemand)
        self.render_metrics = make_renderer(self.metrics, self.pool, self.tenants, self.ondemand)
        self.peers_dir: Path | None = None  # --workers N: where the siblings serve their metrics
        self.worker_index = 0
        self.started = time.time()
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/health"): self.health,
            ("GET", "/metrics"): self.metrics_text,
            ("GET", "/v1/models"): self.models,
            ("GET", "/models"): self.models,
            ("GET", "/admin/usage"): self.usage,
            ("GET", "/admin/keys"): self.keys,
            **self.admin.routes(),
        }

    def dispatch(self, request: Request) -> Handler | None:
        """The handler for ``request``: the proxy for any other ``POST /v1/*``; None: 404."""
        method, path = request.method, request.path
        if method == "POST" and path.startswith("/v1/"):
            return self.cancel if path.startswith("/v1/cancel/") else self.proxy.handle
        if method == "GET" and path.startswith("/v1/models/"):
            return self.model
        return self.routes.get((method, path))

    async def start(self) -> None:
        """Start the upstream side and discovery."""
        await self.proxy.start()
        if self.tenants is not None:
            await self.tenants.start()
        await self.discovery.start()
        if self.engine_load is not None:
            self.engine_load.start()
        await self.outliers.start()

    async def close(self) -> None:
        """Stop discovery and close upstream connections."""
        await self.outliers.close()
        if self.engine_load is not None:
            await self.engine_load.close()
        await self.discovery.close()
        await self.ondemand.close()
        await self.proxy.close()
        if self.tenants is not None:
            await self.tenants.close()

    def _rid(self, request: Request) -> str:
        return request.headers.get("x-request-id") or self.proxy.new_id()

    async def health(self, request: Request, conn: Connection) -> Reply:
        """200 with instance counts (the router itself is up)."""
        insts = list(self.pool.instances.values())
        return json_response(
            {
                "status": "ok",
                "instances": len(insts),
                "healthy": sum(1 for i in insts if i.healthy),
                "models": len(self.pool.by_model),
                "in_flight": self.proxy.requests.count(),
                "registry_connected": self.discovery.registry_connected,
                "pid": os.getpid(),  # with --workers N: which worker answered
            },
            self._rid(request),
        )

    async def metrics_text(self, request: Request, conn: Connection) -> Reply:
        """Prometheus text exposition (with ``--workers N``: summed over every worker)."""
        rid = self._rid(request).encode("utf-8", "surrogateescape")
        text = self.render_metrics()
        if self.peers_dir is not None:
            text = await peers.gather(self.peers_dir, self.worker_index, text)
        return Reply(200, text, _PROM_TYPE, b"X-Request-ID: " + rid + b"\r\n")

    async def models(self, request: Request, conn: Connection) -> Reply:
        """Every model served or startable on demand, plus aliases, as OpenAI's list; each card
        has a ``corral`` object (state, replicas) that OpenAI clients ignore."""
        rid = self._rid(request)
        names = model_names(self.pool, self.ondemand)
        if self.tenants is not None:
            key = self.tenants.lookup(request.headers.get("authorization"))
            if isinstance(key, str):
                return error(401, key, rid, "invalid_api_key")
            names = self.tenants.allowed_models(key, names, self.pool.aliases)
        data = model_cards(self.pool, self.ondemand, int(self.started), names)
        return json_response({"object": "list", "data": data}, rid)

    async def model(self, request: Request, conn: Connection) -> Reply:
        """``GET /v1/models/{id}``: one card, or 404 in the OpenAI shape."""
        rid = self._rid(request)
        name = unquote(request.path.removeprefix("/v1/models/"))
        if self.tenants is not None:
            key = self.tenants.lookup(request.headers.get("authorization"))
            if isinstance(key, str):
                return error(401, key, rid, "invalid_api_key")
            if name not in self.tenants.allowed_models(key, [name], self.pool.aliases):
                return error(404, f"model {name!r} not found", rid, "model_not_found")
        card = model_card(self.pool, self.ondemand, int(self.started), name)
        if card is None:
            return error(404, f"model {name!r} not found", rid, "model_not_found")
        return json_response(card, rid)

    async def cancel(self, request: Request, conn: Connection) -> Reply:
        """Abort the in-flight request with that X-Request-ID."""
        rid = self._rid(request)
        target = unquote(request.path.removeprefix("/v1/cancel/"))
        owner = None
        if self.tenants is not None:
            key = self.tenants.lookup(request.headers.get("authorization"))
            if isinstance(key, str):
                return error(401, key, rid, "invalid_api_key")
            owner = key.name
        if not self.proxy.requests.cancel(target, owner):
            return error(404, f"no request {target!r} in flight", rid, "request_not_found")
        return json_response({"id": target, "object": "cancel", "cancelled": True}, rid)

    async def usage(self, request: Request, conn: Connection) -> Reply:
        """``GET /admin/usage[?key=NAME]`` (admin token): tokens per key and model."""
        rid = self._rid(request)
        if (denied := self.admin.denied(request, rid)) is not None:
            return denied
        if self.tenants is None:
            return json_response({"object": "usage", "since": self.started, "log": None, "data": []}, rid)
        return json_response(self.tenants.usage.report(request.query.get("key")), rid)

    async def keys(self, request: Request, conn: Connection) -> Reply:
        """``GET /admin/keys`` (admin token): each key's in-flight, queued, tokens/minute, limits."""
        rid = self._rid(request)
        if (denied := self.admin.denied(request, rid)) is not None:
            return denied
        if self.tenants is None:
            return json_response({"object": "list", "data": []}, rid)
        queued: dict[str, int] = {}
        for q in self.pool.waiters.values():
            for name, n in q.depth_by_key().items():
                queued[name] = queued.get(name, 0) + n
        return json_response({"object": "list", "data": self.tenants.view(queued)}, rid)


def api_keys_from_env(name: str) -> frozenset[str]:
    """The comma-separated keys in environment variable ``name`` (empty: no auth)."""
    return parse_keys(os.environ.get(name))


async def serve(settings: RouterSettings, worker_index: int | None = None) -> None:
    """Run the router until SIGINT/SIGTERM (``worker_index``: one of ``--workers N``)."""
    keys = api_keys_from_env(keys_env(settings))
    router = Router(settings, keys)  # reads [[router.keys]] and the keys file
    n_keys = len(router.tenants.keyring.by_digest) if router.tenants is not None else 0
    problem = auth_problem(settings, n_keys)
    if problem:
        raise ConfigError(problem)
    limits = settings.limits
    server = Server(
        router.dispatch,
        router.proxy.new_id,
        limits.connection_limits(settings.max_body_bytes),
        limits.max_connections,
    )
    await router.start()
    settle_heap()  # before listening: no request waits on the collection
    from corral.tls import scheme, server_context

    own: list[asyncio.AbstractServer] = []  # this worker's metrics and activity for its siblings
    try:
        if worker_index is not None:
            router.peers_dir, router.worker_index = peers.peers_dir_from_env(), worker_index
            router.admin.peers = (router.peers_dir, worker_index) if router.peers_dir else None
            if router.peers_dir is not None:
                own.append(await peers.serve_own(router.peers_dir, worker_index, router.render_metrics))
                own.append(
                    await peers.serve_own(
                        router.peers_dir,
                        worker_index,
                        lambda: json.dumps(router.ondemand.activity()).encode(),
                        "activity",
                    )
                )
        await server.start(
            settings.host,
            settings.port,
            server_context(settings.tls_cert, settings.tls_key),
            reuse_port=worker_index is not None,
        )
    except BaseException:
        for srv in own:
            srv.close()
        await router.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "corral router on %s://%s:%d (policy %s, %d static workers, registry %s); %s",
        scheme(bool(settings.tls_cert)),
        settings.host,
        settings.port,
        settings.policy,
        len(settings.workers),
        settings.registry_url or "none",
        auth_line(settings, n_keys, len(keys)),
    )
    try:
        await stop.wait()
        await drain(server, router, settings.drain_timeout_s)
    finally:
        for srv in own:
            srv.close()
        await server.close()
        await router.close()


def settle_heap() -> None:
    """Collect the start-up garbage, then freeze what is left out of the collector's sight.

    What exists once the router serves (modules, classes, settings, the pool) lives as long as
    the process. Left in the collector's generations, every full collection walks all of it: a
    50-80 ms pause at an unpredictable moment under traffic (several µs per request on
    average in the benchmarks). Frozen, a full collection walks only what requests made.
    """
    gc.collect()
    gc.freeze()


async def drain(server: Server, router: Router, timeout: float) -> None:
    """Stop accepting; let requests in flight finish within ``timeout`` s; then end the rest
    (streams with an SSE error event, others with a 503) and give them a moment to be written."""
    log.warning("corral router: draining (up to %.0f s)", timeout)
    if await server.drain(timeout):
        return
    n = router.proxy.abort_all()
    log.warning("corral router: drain timeout; ending %d request(s) in flight", n)
    await server.drain(2.0)


def run(settings: RouterSettings) -> None:
    """Blocking entry point: one process, or ``settings.processes`` workers on one port."""
    if settings.processes > 1:
        from corral.router.workers import run_workers

        raise SystemExit(run_workers(settings))
    run_one(settings)


def run_one(settings: RouterSettings, worker_index: int | None = None) -> None:
    """One router process on uvloop (when available)."""
    # INFO: the start line (address, policy, whether auth is on); the hot path logs nothing.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        factory = None
    with asyncio.Runner(loop_factory=factory) as r:
        r.run(serve(settings, worker_index))
