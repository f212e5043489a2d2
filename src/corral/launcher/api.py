"""The launcher's control API (FastAPI, on the dashboard port), documented in docs/launcher.md.

Every ``/api`` route except ``/api/health`` needs ``Authorization: Bearer TOKEN`` when a token is
configured. Errors are OpenAI-shaped (``corral.errors.error_body``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

from corral.errors import error_body
from corral.launcher.logtail import follow_lines, read_tail
from corral.launcher.orchestrator import Orchestrator
from corral.launcher.resources import Memo, ResourceSampler, Sample
from corral.launcher.views import service_view
from corral.registry.http import install_error_handlers

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong bearer token (when one is configured)"},
    404: {"description": "No service or group by that name"},
}

Action = Literal["start", "stop", "restart"]
_KEEPALIVE_S = 15.0
_STATIC = Path(__file__).resolve().parent.parent / "dashboard" / "static"
_PLACEHOLDER = (
    "<!doctype html><title>corral</title><h1>corral</h1>"
    "<p>The dashboard is not installed; the control API is at <a href='/docs'>/docs</a>.</p>"
)


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def create_app(orch: Orchestrator, token: str | None, shutdown: asyncio.Event) -> FastAPI:
    """The control API over ``orch``; ``shutdown`` is set by ``POST /api/shutdown``."""
    app = FastAPI(title="corral launcher", version="1", docs_url="/docs", redoc_url=None)
    app.state.orch = orch
    expected = f"Bearer {token}".encode() if token else None
    install_error_handlers(app)  # validation errors, unknown routes: OpenAI-shaped too

    async def auth(request: Request) -> None:
        if expected is None:
            return
        got = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(got, expected):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer ...)")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(error_body(str(exc.detail), exc.status_code), exc.status_code, headers=headers)

    def names_of(target: str, kind: str) -> list[str]:
        names = orch.names(target)
        if not names:
            raise HTTPException(404, f"no {kind} named {target!r}")
        return names

    async def act(names: list[str], action: Action) -> dict[str, Any]:
        if action == "start":
            for n in names:
                if not await orch.ondemand.start_process(n):  # a parked engine: unpark it
                    orch.start(n)
        elif action == "stop":
            await orch.stop(names)
        else:
            await orch.restart(names)
        snap = await samples()
        views = [service_view(orch, n, 0, None, snap) for n in names]
        return {"ok": True, "action": action, "services": views}

    # Resource figures and GPU attribution are sampled once per second at most, whatever the
    # number of open dashboards (each refreshes every 2 s): see corral.launcher.resources.
    sampler = ResourceSampler(ttl_s=1.0)

    async def samples() -> dict[int, Sample]:
        pids = [sup.pid for sup in orch.sups.values() if sup.pid]
        hit = sampler.cached(pids)
        return hit if hit is not None else await asyncio.to_thread(sampler.sample, pids)

    def _attribution() -> Any:
        from corral.launcher.gpus import attribution

        return attribution(orch)

    def _gpus_doc() -> dict[str, Any]:
        from corral.launcher.gpus import gpus_doc

        return gpus_doc(orch)

    att_memo: Memo[Any] = Memo(_attribution, ttl_s=1.0)
    gpus_memo: Memo[dict[str, Any]] = Memo(_gpus_doc, ttl_s=1.0)

    def gpu_key() -> object:
        # The inventory read is cheap (a stat of the file, or NVML); the process-table pass is not.
        from corral.gpu import read_inventory
        from corral.launcher.gpus import service_roots

        return (read_inventory(), service_roots(orch))

    async def gpu_att() -> Any:
        return await asyncio.to_thread(lambda: att_memo.get(gpu_key()))

    @app.get("/api/health", tags=["launcher"])
    async def health() -> dict[str, Any]:
        """Liveness of the launcher itself (no token needed)."""
        return {"ok": True, "pid": os.getpid(), "all_healthy": orch.all_healthy()}

    api = APIRouter(prefix="/api", dependencies=[Depends(auth)], responses=_ERRORS)

    @api.get("/services", tags=["services"])
    async def list_services(tail: int = Query(0, ge=0, le=1000)) -> dict[str, Any]:
        """Every planned process with its state, pid, ports, uptime, restarts, cpu, memory and GPUs."""
        att, snap = await asyncio.gather(gpu_att(), samples())
        return {"services": [service_view(orch, p.name, tail, att, snap) for p in orch.plan.processes]}

    @api.get("/services/{name}", tags=["services"])
    async def get_service(name: str, tail: int = Query(20, ge=0, le=1000)) -> dict[str, Any]:
        """One process, with its last ``tail`` log lines."""
        if name not in orch.sups:
            raise HTTPException(404, f"no service named {name!r}")
        return service_view(orch, name, tail, await gpu_att(), await samples())

    @api.post("/services/{name}/{action}", tags=["services"])
    async def service_action(name: str, action: Action) -> dict[str, Any]:
        """Start (after its dependencies), stop, or restart one process."""
        if name not in orch.sups:
            raise HTTPException(404, f"no service named {name!r}")
        return await act([name], action)

    @api.post("/groups/{group}/{action}", tags=["services"])
    async def group_action(group: str, action: Action) -> dict[str, Any]:
        """Start, stop or restart every process of a group (stop goes in reverse dependency order)."""
        names = orch.plan.groups().get(group)
        if not names:
            raise HTTPException(404, f"no group named {group!r}")
        return await act(names, action)

    @api.post("/all/{action}", tags=["services"])
    async def all_action(action: Action) -> dict[str, Any]:
        """Start, stop or restart everything."""
        return await act(names_of("all", "service"), action)

    @api.get("/groups", tags=["services"])
    async def groups() -> dict[str, Any]:
        """Group name -> its process names."""
        return {"groups": orch.plan.groups()}

    @api.get("/services/{name}/logs", tags=["logs"])
    async def logs(name: str, tail: int = Query(200, ge=0, le=100_000)) -> dict[str, Any]:
        """The last ``tail`` lines of a process's log file."""
        path = _log_path(name)
        return {"name": name, "lines": await asyncio.to_thread(read_tail, path, tail)}

    @api.get("/services/{name}/logs/stream", tags=["logs"])
    async def log_stream(
        name: str, request: Request, tail: int = Query(50, ge=0, le=10_000)
    ) -> StreamingResponse:
        """Server-sent events: the last ``tail`` lines, then every new line (``data: {"name", "line"}``)."""
        path = _log_path(name)

        async def gen() -> AsyncIterator[bytes]:
            async for line in follow_lines(path, tail, keepalive_s=_KEEPALIVE_S):
                yield b": keep-alive\n\n" if line is None else _sse({"name": name, "line": line})

        return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @api.get("/events", tags=["events"])
    async def events(request: Request, replay: bool = False) -> StreamingResponse:
        """Server-sent events (``event: state``), one per state change:
        ``{"name", "state", "previous", "at", "pid", "reason", "restarts", "exit_code"}``;
        ``replay=true`` first sends the changes seen so far (the last 1000)."""

        # Subscribed before the response starts: a client that sees the headers misses no event.
        sub = orch.feed.subscribe(replay)

        async def gen() -> AsyncIterator[bytes]:
            try:
                yield b": connected\n\n"
                while True:
                    ev = await sub.get(_KEEPALIVE_S)
                    yield b": keep-alive\n\n" if ev is None else _sse(ev, "state")
            finally:
                sub.close()

        return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @api.get("/gpus", tags=["gpus"])
    async def gpus() -> dict[str, Any]:
        """Per GPU: total/used/free memory, utilisation and every holder (service or foreign PID);
        ``placed``: process -> the GPUs it was given."""
        return await asyncio.to_thread(lambda: gpus_memo.get(gpu_key()))

    @api.get("/models", tags=["models"])
    async def on_demand_models() -> dict[str, Any]:
        """On-demand models: entry, models, state, replicas (ready), keep_warm, idle_unload_s."""
        return {"models": orch.ondemand.view()}

    @api.post("/models/{name}/wake", tags=["models"], status_code=202)
    async def wake_model(name: str) -> dict[str, Any]:
        """Start an on-demand model (by entry or model name); the router calls this on a first
        request. 202 with the wake's ``generation``; 503 when it cannot start now."""
        from corral.launcher.ondemand import WakeRefused

        try:
            return await orch.ondemand.wake(name)
        except KeyError:
            raise HTTPException(404, f"no on-demand model named {name!r}") from None
        except WakeRefused as exc:
            raise HTTPException(503, str(exc)) from None

    @api.post("/shutdown", tags=["launcher"])
    async def shutdown_route() -> dict[str, Any]:
        """Stop every process in reverse dependency order, then the launcher exits."""
        shutdown.set()
        return {"ok": True}

    def _log_path(name: str) -> Path:
        sup = orch.sups.get(name)
        if sup is None or sup.spec.log_file is None:
            raise HTTPException(404, f"no service named {name!r}")
        return sup.spec.log_file

    if orch.plan.router_url:
        # The dashboard's router views: /api/router (models -> instances with health, circuit,
        # in flight) and /api/router/stats (rates and latency from the router's /metrics).
        from corral.launcher.dashboard_api import dashboard_router

        registry = orch.plan.get("registry")
        app.include_router(
            dashboard_router(
                orch.plan.router_url,
                orch.plan.registry_url,
                registry_token=registry.token if registry else None,
                dependencies=[Depends(auth)],
                ssl=orch.plan.client_ssl(),
            )
        )
    else:

        @api.get("/router", tags=["router"])
        async def router_view() -> dict[str, Any]:
            """No router in this config: the registry's instances (or an ``error``)."""
            from corral.launcher.upstream import router_view as fetch

            return await fetch(orch.plan)

    metrics: list[Any] = []  # the Prometheus registry, built on the first scrape

    @app.get("/metrics", tags=["launcher"], response_class=PlainTextResponse, responses={401: _ERRORS[401]})
    async def prometheus(_: None = Depends(auth)) -> PlainTextResponse:
        """The fleet in one scrape: the router's metrics, every sitter's (with its engine's, labelled
        service/replica/host) and the GPUs' (``corral_gpu_memory_used_bytes{gpu,service}``, ...)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        from corral.launcher.fleet_metrics import union
        from corral.launcher.gpus import metrics_registry

        if not metrics:
            metrics.append(metrics_registry(orch))
        body = await union(orch.plan, metrics[0])
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(api)
    from corral.launcher.fleet_api import fleet_router

    app.include_router(fleet_router(orch, [Depends(auth)]))
    _mount_dashboard(app)
    return app


def _mount_dashboard(app: FastAPI) -> None:
    """The dashboard's static files at ``/`` when installed, else a placeholder page."""
    if (_STATIC / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=_STATIC, html=True), name="dashboard")
        return

    @app.get("/", include_in_schema=False)
    async def placeholder() -> HTMLResponse:
        return HTMLResponse(_PLACEHOLDER)
