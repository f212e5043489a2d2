"""Error responses the router answers itself, in the OpenAI shape (via corral.errors.error_body)."""

from __future__ import annotations

import json

from aiohttp import web

from corral.errors import error_body


def error(
    status: int, message: str, request_id: str, code: str | None = None, retry_after: int | None = None
) -> web.Response:
    """A JSON error response carrying the request id (and ``Retry-After`` when given)."""
    headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = json.dumps(error_body(message, status, code)).encode()
    return web.Response(status=status, body=body, headers=headers)


def json_response(data: object, request_id: str, status: int = 200) -> web.Response:
    """A JSON document with the request id header."""
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        headers={"Content-Type": "application/json", "X-Request-ID": request_id},
    )
