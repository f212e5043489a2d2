"""The health probe shared by config, launcher, sitter and the supervision core."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# `{port}`, `{host}`, `{ports.db}`... are filled in later (config placeholders); a value that
# holds one is checked with a sample in its place, and checked again once filled.
_PLACEHOLDER = re.compile(r"\{[A-Za-z0-9_.-]+\}")


def _sample(value: str) -> str:
    return _PLACEHOLDER.sub("1", value)


def check_http_url(value: str) -> str:
    """``value`` if it is a full http(s) URL with a host; else ValueError with the fix."""
    parts = urlsplit(_sample(value))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be a full http(s) URL such as http://127.0.0.1:8100/health, got {value!r}")
    try:
        parts.port  # noqa: B018  # raises ValueError for a port out of range or not a number
    except ValueError:
        raise ValueError(f"has a bad port: {value!r}") from None
    return value


def check_tcp_address(value: str) -> str:
    """``value`` if it is ``host:port``; else ValueError."""
    host, sep, port = _sample(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port, got {value!r}")
    return value


class Probe(BaseModel):
    """A health check with Kubernetes semantics; exactly one of ``http``, ``tcp``, ``exec``.

    ``http`` is a full URL answered by GET; the probe passes when the status equals
    ``expect_status`` (any 2xx when ``expect_status`` is 200). ``tcp`` is ``host:port`` and passes
    when a connection opens. ``exec`` is an argv whose exit status 0 passes. While a process
    starts, readiness runs fast whatever ``period_s`` says (corral.proc.decide.starting_period).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    http: str | None = None
    expect_status: int = Field(default=200, ge=100, le=599)
    tcp: str | None = None
    exec: list[str] | None = None
    initial_delay_s: float = Field(default=0, ge=0)
    period_s: float = Field(default=10, gt=0)
    timeout_s: float = Field(default=1, gt=0)
    success_threshold: int = Field(default=1, ge=1)
    failure_threshold: int = Field(default=3, ge=1)

    @field_validator("http")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return None if v is None else check_http_url(v)

    @field_validator("tcp")
    @classmethod
    def _tcp_addr(cls, v: str | None) -> str | None:
        return None if v is None else check_tcp_address(v)

    @field_validator("exec")
    @classmethod
    def _exec_argv(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or not v[0]):
            raise ValueError("must be a non-empty argv list")
        return v

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Probe:
        kinds = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a probe needs exactly one of http, tcp, exec (got {kinds or 'none'})")
        return self

    @classmethod
    def shorthand(cls, health: str | list[str], **fields: object) -> Probe:
        """``"http://..."``, ``"tcp://host:port"`` or an exec argv -> a probe (ValueError if bad)."""
        if isinstance(health, list):
            return cls(exec=health, **fields)  # type: ignore[arg-type]
        if health.startswith("tcp://"):
            return cls(tcp=health.removeprefix("tcp://").rstrip("/"), **fields)  # type: ignore[arg-type]
        if health.startswith(("http://", "https://")):
            return cls(http=health, **fields)  # type: ignore[arg-type]
        raise ValueError('must be "http://...", "tcp://host:port", an exec argv list or a probe table')

    def describe(self) -> str:
        """A short human name, e.g. ``GET http://127.0.0.1:8100/health``."""
        if self.http is not None:
            return f"GET {self.http}"
        if self.tcp is not None:
            return f"tcp {self.tcp}"
        return f"exec {' '.join(self.exec or [])}"
