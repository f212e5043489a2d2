"""The sitter's HTTP API on backend port + 1: health, models, info, logs, admin start/stop/restart.

Served with ``aiohttp.web`` on the sitter's own event loop: aiohttp is loaded anyway for the
registry client and the router link, and the sitter runs once per backend, so FastAPI + uvicorn
(~16 MB resident) would be paid once per GPU backend for five small routes. Every error is
OpenAI-shaped (``corral.errors.error_body``), decided in one middleware. Admin calls need
``Authorization: Bearer <admin token>`` when the sitter was given one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from corral.errors import error_body
from corral.proc.events import State
from corral.promtext import CONTENT_TYPE
from corral.sitter.models import fetch_models
from corral.sitter.openapi import openapi_document

if TYPE_CHECKING:
    from corral.sitter.runner import Sitter

log = logging.getLogger("corral.sitter")

TAIL_DEFAULT, TAIL_MAX = 100, 10000
SHUTDOWN_TIMEOUT_S = 2.0  # in-flight requests get this long once the sitter is done
_SITTER: web.AppKey[Sitter] = web.AppKey("sitter")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(http_status: int, message: str, code: str | None = None, **extra: Any) -> web.Response:
    return web.json_response({**extra, **error_body(message, http_status, code=code)}, status=http_status)


def _invalid(param: str, message: str) -> web.Response:
    body = error_body(f"{param}: {message}", 400, code="invalid_value", param=param)
    return web.json_response(body, status=400)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The error boundary: routing errors and bugs become OpenAI-shaped JSON, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:  # 404 / 405 from the router
        if exc.status < 400:
            raise
        resp = _error(exc.status, exc.reason, code="http_error")
        if "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("sitter API: %s %s failed", request.method, request.path)
        return _error(500, "internal error in the sitter (see its log)", code="internal_error")


def _sitter(request: web.Request) -> Sitter:
    return request.app[_SITTER]


async def health(request: web.Request) -> web.Response:
    """200 only while the backend is healthy; 503 (with the state and reason) otherwise."""
    sitter = _sitter(request)
    body = sitter.health()
    if body["backend"] == State.HEALTHY:
        return web.json_response(body)
    message = f"backend {sitter.backend_url} is {body['backend']}"
    if body.get("reason"):
        message += f": {body['reason']}"
    return _error(503, message, code=f"backend_{body['backend']}", **body)


async def models(request: web.Request) -> web.Response:
    """The backend's ``/v1/models``, fetched now."""
    url = _sitter(request).backend_url
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            return web.json_response(await fetch_models(session, url))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        detail = str(exc) or type(exc).__name__
        return _error(503, f"{url}/v1/models: {detail}", code="backend_unavailable")


async def info(request: web.Request) -> web.Response:
    """Who this sitter is and how its backend is doing."""
    return web.json_response(_sitter(request).info())


async def logs(request: web.Request) -> web.Response:
    """The backend's last ``tail`` log lines (1..10000, default 100)."""
    raw = request.query.get("tail")
    tail = TAIL_DEFAULT
    if raw is not None:
        try:
            tail = int(raw)
        except ValueError:
            return _invalid("tail", "Input should be a valid integer, unable to parse string as an integer")
        if not 1 <= tail <= TAIL_MAX:
            bound = "greater than or equal to 1" if tail < 1 else f"less than or equal to {TAIL_MAX}"
            return _invalid("tail", f"Input should be {bound}")
    sitter = _sitter(request)
    return web.json_response({"name": sitter.cfg.service_name, "lines": sitter.supervisor.tail(tail)})


def _authorized(sitter: Sitter, request: web.Request) -> bool:
    token = sitter.cfg.admin_token
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _admin(action: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        sitter = _sitter(request)
        if not _authorized(sitter, request):
            return _error(
                401, "missing or wrong admin token (Authorization: Bearer ...)", code="unauthorized"
            )
        await sitter.control(action)
        return web.json_response({"action": action, **sitter.health()})

    handle.__name__ = handle.__qualname__ = action
    return handle


async def openapi(_: web.Request) -> web.Response:
    """The OpenAPI document of this API."""
    return web.json_response(openapi_document())


async def metrics(request: web.Request) -> web.Response:
    """The engine's metrics and the sitter's own, labelled with service, replica and host."""
    from corral.sitter.metrics import scrape

    body = await scrape(_sitter(request))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def create_app(sitter: Sitter) -> web.Application:
    """The aiohttp application serving ``sitter``."""
    app = web.Application(middlewares=[_errors])
    app[_SITTER] = sitter
    for path, handler in (
        ("/health", health),
        ("/models", models),
        ("/info", info),
        ("/logs", logs),
        ("/metrics", metrics),
        ("/openapi.json", openapi),
    ):
        app.router.add_get(path, handler, allow_head=False)
    for action in ("start", "stop", "restart"):
        app.router.add_post(f"/{action}", _admin(action))
    return app


async def serve(sitter: Sitter, sock: socket.socket, ssl: Any = None) -> None:
    """Serve the API on the bound, listening ``sock`` until cancelled (HTTPS with ``ssl``)."""
    runner = web.AppRunner(
        create_app(sitter), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        await web.SockSite(runner, sock, ssl_context=ssl).start()
        await asyncio.Event().wait()  # until cancelled: the sitter decides when to stop
    finally:
        await runner.cleanup()
