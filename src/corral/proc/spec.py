"""What to run and how to watch it: ProcessSpec, Probe and RestartPolicy (pydantic, strict).

Bad values are rejected with field-level messages instead of being clamped: a negative delay, a
threshold below 1 or a probe that is not exactly one of http/tcp/exec is a config mistake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Probe(BaseModel):
    """A health check with Kubernetes semantics; exactly one of ``http``, ``tcp``, ``exec``.

    ``http`` is a full URL answered by GET; the probe passes when the status equals
    ``expect_status`` (any 2xx when ``expect_status`` is 200). ``tcp`` is ``host:port`` and passes
    when a connection opens. ``exec`` is an argv whose exit status 0 passes.
    """

    model_config = ConfigDict(extra="forbid")

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
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"must be a full http(s) URL such as http://127.0.0.1:8100/health, got {v!r}"
                )
        return v

    @field_validator("tcp")
    @classmethod
    def _tcp_addr(cls, v: str | None) -> str | None:
        if v is not None:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"must be host:port, got {v!r}")
        return v

    @field_validator("exec")
    @classmethod
    def _exec_argv(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must be a non-empty argv list")
        return v

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Probe:
        kinds = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a probe needs exactly one of http, tcp, exec (got {kinds or 'none'})")
        return self

    def describe(self) -> str:
        """A short human name, e.g. ``GET http://127.0.0.1:8100/health``."""
        if self.http is not None:
            return f"GET {self.http}"
        if self.tcp is not None:
            return f"tcp {self.tcp}"
        return f"exec {' '.join(self.exec or [])}"


class RestartPolicy(BaseModel):
    """When to restart, how fast, and when to give up (supervisor's startsecs/backoff ideas)."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["always", "on-failure", "never"] = "always"
    max_restarts: int = Field(default=10, ge=0)
    window_s: float | None = Field(default=300, gt=0)  # None: every restart since start counts
    backoff_initial_s: float = Field(default=1, ge=0)
    backoff_factor: float = Field(default=2, ge=1)
    backoff_max_s: float = Field(default=60, ge=0)
    stable_after_s: float = Field(default=30, ge=0)


class ProcessSpec(BaseModel):
    """One supervised process: argv (never a shell), environment, probes and policies."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = {}
    cwd: str | None = None
    log_file: Path | None = None
    log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    log_backups: int = Field(default=3, ge=0)
    pid_file: Path | None = None
    ports: list[int] = []
    readiness: Probe | None = None
    liveness: Probe | None = None
    start_timeout_s: float = Field(default=600, gt=0)
    # Without a readiness probe: HEALTHY only once the process stayed up this long (0: at spawn);
    # an exit before that is a failed start.
    settle_s: float = Field(default=0, ge=0)
    restart: RestartPolicy = RestartPolicy()
    stop_grace_s: float = Field(default=10, ge=0)

    @field_validator("argv")
    @classmethod
    def _argv0(cls, v: list[str]) -> list[str]:
        if not v[0]:
            raise ValueError("argv[0] (the command) must not be empty")
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        bad = [p for p in v if not 0 < p < 65536]
        if bad:
            raise ValueError(f"ports must be within 1..65535, got {bad}")
        return v
