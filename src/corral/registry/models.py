"""Wire models of the registry API (pydantic), shared by the server and its OpenAPI document.

Instances travel as plain dicts inside the server (cheap to copy and to encode for 1,000
heartbeats a second); these models validate what comes in and document what goes out.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_HEARTBEAT_S = 30.0
DEFAULT_LEASE_TTL_S = 3 * DEFAULT_HEARTBEAT_S
MAX_LEASE_TTL_S = 7 * 24 * 3600.0

# "model": an on-demand model the launcher announces (url = its wake URL, see router/ondemand.py).
Kind = Literal["backend", "sitter", "model"]
# Ids appear in URL paths; keep them to characters that need no escaping.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
# States are proc.State values on the wire; open-ended so a newer sitter's state is not a 4xx.
STATE_PATTERN = r"^[a-z][a-z_]{0,31}$"
_ID_RE = re.compile(ID_PATTERN)


def check_url(url: str) -> str:
    """An instance URL must be http(s) with a host and an explicit port (the router dials it)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"URL {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"URL {url!r} has no host")
    if port is None:
        raise ValueError(f"URL {url!r} has no port")
    return url.rstrip("/")


def valid_id(instance_id: str) -> bool:
    """Whether ``instance_id`` is a well-formed instance id."""
    return bool(_ID_RE.match(instance_id))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InstanceIn(_Strict):
    """Body of ``POST /v1/instances``: register (or re-register, with the same ``id``)."""

    service: str = Field(min_length=1, max_length=200)
    kind: Kind = "backend"
    url: str = Field(max_length=2000)
    models: list[str] = Field(default_factory=list, max_length=1000)
    state: str = Field(default="starting", pattern=STATE_PATTERN)
    metadata: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, pattern=ID_PATTERN)
    lease_ttl_s: float = Field(default=DEFAULT_LEASE_TTL_S, gt=0, le=MAX_LEASE_TTL_S)

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return check_url(v)


class HeartbeatIn(_Strict):
    """Optional body of ``PUT /v1/instances/{id}/heartbeat``: renew and, if given, update."""

    state: str | None = Field(default=None, pattern=STATE_PATTERN)
    models: list[str] | None = Field(default=None, max_length=1000)
    metadata: dict[str, Any] | None = None


class InstancePatch(HeartbeatIn):
    """Body of ``PATCH /v1/instances/{id}``; ``metadata`` is merged key by key (null deletes).

    ``draining``: true takes the instance out of rotation for new requests (routers let its
    in-flight ones finish); false puts it back. Only this call changes it: heartbeats keep it,
    a new registration (a new process) clears it.
    """

    draining: bool | None = None


class Instance(BaseModel):
    """One registered instance as the registry returns it (times are Unix seconds)."""

    id: str
    service: str
    kind: Kind
    url: str
    models: list[str]
    state: str
    draining: bool = False  # set by PATCH {"draining": true}: routers send it nothing new
    metadata: dict[str, Any]
    registered_at: float
    last_heartbeat: float
    lease_ttl_s: float
    expires_at: float


class Lease(BaseModel):
    """Answer of register and heartbeat: the lease just granted or renewed."""

    id: str
    lease_ttl_s: float
    expires_at: float
    revision: int
    instance: Instance


class InstanceList(BaseModel):
    """Answer of ``GET /v1/instances``."""

    data: list[Instance]
    revision: int


class Deleted(BaseModel):
    """Answer of ``DELETE /v1/instances/{id}``."""

    id: str
    deleted: bool
    revision: int


class ModelCard(BaseModel):
    """One entry of the OpenAI model list."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "corral"


class ModelList(BaseModel):
    """Answer of ``GET /v1/models``: models served by healthy backends."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
