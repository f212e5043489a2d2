"""The sitter API's OpenAPI document, written by hand (the API is six routes; no framework needed).

Served at ``GET /openapi.json`` so the contract stays published; keep it in step with api.py.
"""

from __future__ import annotations

from typing import Any

_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "OpenAI-style error (corral.errors.error_body).",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}

_HEALTH: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "description": "'healthy', else the backend state"},
        "sitter": {"type": "string", "enum": ["running", "stopping"]},
        "backend": {
            "type": "string",
            "enum": ["stopped", "starting", "healthy", "unhealthy", "restarting", "stopping", "failed"],
        },
        "pid": {"type": ["integer", "null"]},
        "restarts": {"type": "integer"},
        "reason": {"type": ["string", "null"]},
        "last_exit": {"type": ["integer", "null"], "description": "-N: killed by signal N"},
        "sitter_pid": {"type": "integer"},
        "started_at": {"type": ["number", "null"], "description": "the backend's start (unix time)"},
        "last_lines": {
            "type": "array",
            "items": {"type": "string"},
            "description": "only when failed: the backend's last output lines",
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ref("Error"), "error") for s in statuses}


def _admin(summary: str) -> dict[str, Any]:
    ok = {"allOf": [_ref("Health"), {"properties": {"action": {"type": "string"}}}]}
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "responses": {"200": _json(ok, "the action and the health after it"), **_errors(401, 500)},
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the sitter's port + 1 API."""
    obj = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "corral sitter", "version": "1"},
        "paths": {
            "/health": {
                "get": {
                    "summary": "200 only while the backend is healthy; else 503 with the state and reason",
                    "responses": {
                        "200": _json(_ref("Health"), "backend healthy"),
                        "503": _json({"allOf": [_ref("Health"), _ref("Error")]}, "backend not healthy"),
                    },
                }
            },
            "/models": {
                "get": {
                    "summary": "The backend's /v1/models, fetched now",
                    "responses": {"200": _json(obj, "OpenAI model list"), **_errors(503)},
                }
            },
            "/info": {
                "get": {
                    "summary": "Who this sitter is and how its backend is doing",
                    "responses": {"200": _json(obj, "pid, state, restarts, argv, registry, gpus, ...")},
                }
            },
            "/logs": {
                "get": {
                    "summary": "The backend's last log lines",
                    "parameters": [
                        {
                            "name": "tail",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                        }
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "lines": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                            "log lines, oldest first",
                        ),
                        **_errors(400),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "The engine's own /metrics (when it has one) and the sitter's, with "
                    "service, replica and host labels",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/start": _admin("Start the backend if it is stopped or failed"),
            "/stop": _admin("Stop the backend (whole tree); it stays stopped until /start"),
            "/restart": _admin("Stop and start the backend"),
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": _json(obj, "OpenAPI 3.1")}}
            },
        },
        "components": {
            "schemas": {"Error": _ERROR, "Health": _HEALTH},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "--admin-token, when set"}
            },
        },
    }
