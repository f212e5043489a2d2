"""The sitter's HTTP API on backend port + 1: health, models, info, logs, admin start/stop/restart.

Every error is OpenAI-shaped (``corral.errors.error_body``). Admin calls need
``Authorization: Bearer <admin token>`` when the sitter was given one.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import aiohttp
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from corral.errors import error_body
from corral.proc.events import State
from corral.sitter.models import fetch_models

if TYPE_CHECKING:
    from corral.sitter.runner import Sitter


def _error(http_status: int, message: str, code: str | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({**extra, **error_body(message, http_status, code=code)}, status_code=http_status)


def create_app(sitter: Sitter) -> FastAPI:
    """The FastAPI app serving ``sitter``."""
    app = FastAPI(title="corral sitter", version="1", docs_url=None, redoc_url=None)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), code="http_error")

    async def on_invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        loc = errors[0].get("loc", ()) if errors else ()
        msg = str(errors[0].get("msg", "invalid request")) if errors else "invalid request"
        field = ".".join(str(p) for p in loc[1:]) or None
        body = error_body(f"{field}: {msg}" if field else msg, 400, code="invalid_value", param=field)
        return JSONResponse(body, status_code=400)

    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)

    def authorized(request: Request) -> bool:
        token = sitter.cfg.admin_token
        if not token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 only while the backend is healthy; 503 (with the state and reason) otherwise."""
        body = sitter.health()
        if body["backend"] == State.HEALTHY:
            return JSONResponse(body)
        message = f"backend {sitter.backend_url} is {body['backend']}"
        if body.get("reason"):
            message += f": {body['reason']}"
        return _error(503, message, code=f"backend_{body['backend']}", **body)

    @app.get("/models")
    async def models() -> JSONResponse:
        """The backend's ``/v1/models``, fetched now."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                return JSONResponse(await fetch_models(session, sitter.backend_url))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            detail = str(exc) or type(exc).__name__
            return _error(503, f"{sitter.backend_url}/v1/models: {detail}", code="backend_unavailable")

    @app.get("/info")
    async def info() -> JSONResponse:
        """Who this sitter is and how its backend is doing."""
        return JSONResponse(sitter.info())

    @app.get("/logs")
    async def logs(tail: int = Query(100, ge=1, le=10000)) -> JSONResponse:
        """The backend's last ``tail`` log lines."""
        return JSONResponse({"name": sitter.cfg.service_name, "lines": sitter.supervisor.tail(tail)})

    async def admin(request: Request, action: str) -> JSONResponse:
        if not authorized(request):
            return _error(
                401, "missing or wrong admin token (Authorization: Bearer ...)", code="unauthorized"
            )
        await sitter.control(action)
        return JSONResponse({"action": action, **sitter.health()})

    @app.post("/start")
    async def start(request: Request) -> JSONResponse:
        """Start the backend if it is stopped or failed."""
        return await admin(request, "start")

    @app.post("/stop")
    async def stop(request: Request) -> JSONResponse:
        """Stop the backend (whole tree); it stays stopped until /start."""
        return await admin(request, "stop")

    @app.post("/restart")
    async def restart(request: Request) -> JSONResponse:
        """Stop and start the backend."""
        return await admin(request, "restart")

    return app
