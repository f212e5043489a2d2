"""HTTP plumbing shared by the registry app: OpenAI-shaped errors, body limit, bearer token."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.errors import error_body

MAX_BODY_BYTES = 64 * 1024


class ApiError(Exception):
    """An error answer: HTTP status, message and optional code/param."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_response(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    """An OpenAI-style error response."""
    return JSONResponse(error_body(message, status, code, param), status_code=status)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "body")


async def _on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = _field(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        return error_response(400, f"request body is not valid JSON: {msg}", "invalid_json", "body")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return error_response(422, f"{field}: {msg}{more}", "invalid_value", field)


async def _on_http(_: Request, exc: HTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail))


async def _on_api(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.code, exc.param)


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app answers (validation, 404, 405, ours) is ``{"error": {...}}``."""
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _on_http)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, _on_api)  # type: ignore[arg-type]


class BodyLimit:
    """Pure ASGI middleware: a request body over ``limit`` bytes gets 413 before it is parsed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await self._reject(scope, receive, send)
                    return
                break
        else:
            if scope["method"] in ("GET", "HEAD", "DELETE"):
                await self.app(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            # Chunked body without a length: count as it arrives. FastAPI passes an
            # HTTPException raised while reading the body through to the handlers.
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"request body over {self.limit} bytes")
            return msg

        await self.app(scope, counted, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = error_response(413, f"request body over {self.limit} bytes", "body_too_large", "body")
        await resp(scope, receive, send)


def check_token(request: Request) -> None:
    """FastAPI dependency: writes need ``Authorization: Bearer <token>`` when a token is set."""
    token: str | None = request.app.state.token
    if token is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise ApiError(401, "missing or wrong bearer token", "invalid_api_key")
