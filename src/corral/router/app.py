"""Builds the router's aiohttp application and runs it on uvloop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from aiohttp import web

from corral.router import policies
from corral.router.admin import Admin
from corral.router.config import RouterSettings
from corral.router.discovery import Discovery
from corral.router.metrics import Metrics, make_renderer
from corral.router.pool import Pool
from corral.router.proxy import Proxy
from corral.router.responses import error, json_response

log = logging.getLogger("corral.router")
_PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Router:
    """The router's parts wired together: pool, discovery, proxy, metrics, admin."""

    def __init__(self, settings: RouterSettings, api_keys: frozenset[str] = frozenset()) -> None:
        self.settings = settings
        self.pool = Pool(queue_size=settings.queue_size, aliases=settings.aliases)
        self.metrics = Metrics()
        self.proxy = Proxy(settings, self.pool, self.metrics, policies.load(settings.policy), api_keys)
        self.discovery = Discovery(settings, self.pool)
        self.admin = Admin(self.pool, self.discovery, settings.admin_token, self.proxy.new_id)
        self.render_metrics = make_renderer(self.metrics, self.pool)
        self.started = time.time()

    def app(self) -> web.Application:
        """The aiohttp application (body limit enforced by the proxy, answered as OpenAI JSON)."""
        app = web.Application(client_max_size=self.settings.max_body_bytes, handler_args={"access_log": None})
        app.add_routes(
            [
                web.get("/health", self.health),
                web.get("/metrics", self.metrics_text),
                web.get("/v1/models", self.models),
                web.get("/models", self.models),
                web.post("/v1/cancel/{request_id}", self.cancel),
                *self.admin.routes(),
                web.post("/v1/{tail:.+}", self.proxy.handle),
            ]
        )
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, app: web.Application) -> None:
        await self.proxy.start()
        await self.discovery.start()

    async def _cleanup(self, app: web.Application) -> None:
        await self.discovery.close()
        await self.proxy.close()

    def _rid(self, request: web.Request) -> str:
        return request.headers.get("X-Request-ID") or self.proxy.new_id()

    async def health(self, request: web.Request) -> web.Response:
        """200 with instance counts (the router itself is up)."""
        insts = list(self.pool.instances.values())
        return json_response(
            {
                "status": "ok",
                "instances": len(insts),
                "healthy": sum(1 for i in insts if i.healthy),
                "models": len(self.pool.by_model),
                "in_flight": len(self.proxy.inflight),
                "registry_connected": self.discovery.registry_connected,
            },
            self._rid(request),
        )

    async def metrics_text(self, request: web.Request) -> web.Response:
        """Prometheus text exposition."""
        return web.Response(
            body=self.render_metrics(),
            headers={
                "Content-Type": _PROM_TYPE,
                "X-Request-ID": self._rid(request),
            },
        )

    async def models(self, request: web.Request) -> web.Response:
        """The union of served models (healthy or not) plus aliases, as OpenAI's list."""
        rid = self._rid(request)
        if not self.proxy.authorized(request):
            return error(401, "invalid or missing API key", rid, "invalid_api_key")
        created = int(self.started)
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "corral"}
            for name in self.pool.model_names()
        ]
        return json_response({"object": "list", "data": data}, rid)

    async def cancel(self, request: web.Request) -> web.Response:
        """Abort the in-flight request with that X-Request-ID."""
        rid = self._rid(request)
        if not self.proxy.authorized(request):
            return error(401, "invalid or missing API key", rid, "invalid_api_key")
        target = request.match_info["request_id"]
        if not self.proxy.cancel(target):
            return error(404, f"no request {target!r} in flight", rid, "request_not_found")
        return json_response({"id": target, "object": "cancel", "cancelled": True}, rid)


def api_keys_from_env(name: str) -> frozenset[str]:
    """The comma-separated keys in environment variable ``name`` (empty: no auth)."""
    return frozenset(k.strip() for k in os.environ.get(name, "").split(",") if k.strip())


async def serve(settings: RouterSettings) -> None:
    """Run the router until SIGINT/SIGTERM."""
    router = Router(settings, api_keys_from_env(settings.api_keys_env))
    runner = web.AppRunner(router.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=2048, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.warning(
        "corral router on http://%s:%d (policy %s, %d static workers, registry %s)",
        settings.host,
        settings.port,
        settings.policy,
        len(settings.workers),
        settings.registry_url or "none",
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(settings: RouterSettings) -> None:
    """Blocking entry point: uvloop when available."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        factory = None
    with asyncio.Runner(loop_factory=factory) as r:
        r.run(serve(settings))
