"""corral's error tree and the one place errors become OpenAI-style JSON.

CorralError
├── ConfigError          a config file or flag is wrong (names the file and field)
├── SpawnError           a process could not be started (not found, permission, port taken)
└── UpstreamError        a backend failed a proxied request (names the backend URL)

HTTP APIs answer every error as ``{"error": {"message", "type", "code"}}`` (the OpenAI shape),
built by :func:`error_body` so that all servers agree on it.
"""

from __future__ import annotations

from typing import Any

# OpenAI's error "type" per HTTP status, so clients that switch on it behave as with OpenAI.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    500: "internal_server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def error_type(status: int) -> str:
    """The OpenAI error ``type`` for an HTTP status."""
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(
    message: str, status: int = 400, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style error document."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


class CorralError(Exception):
    """Base of every error corral raises on purpose; its message is meant for users."""


class ConfigError(CorralError):
    """A config file or flag is wrong. ``str()`` names the file, the field path and the problem."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        self.message = message
        self.file = file
        self.field = field
        where = ": ".join(p for p in (file, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class SpawnError(CorralError):
    """A process could not be started: command not found, permission denied, port taken."""


class UpstreamError(CorralError):
    """A backend failed a proxied request."""

    def __init__(self, message: str, *, url: str, status: int = 502) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{url}: {message}")
