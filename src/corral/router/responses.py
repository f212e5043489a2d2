"""Error responses the router answers itself, in the OpenAI shape (via corral.errors.error_body)."""

from __future__ import annotations

from corral.router.http import Reply, error_reply, json_reply


def error(
    status: int, message: str, request_id: str, code: str | None = None, retry_after: int | None = None
) -> Reply:
    """A JSON error response carrying the request id (and ``Retry-After`` when given)."""
    return error_reply(status, message, request_id, code, retry_after)


def json_response(data: object, request_id: str, status: int = 200) -> Reply:
    """A JSON document with the request id header."""
    return json_reply(status, data, request_id)
