"""What to run and how to watch it: ProcessSpec, Probe and RestartPolicy (pydantic, strict).

Bad values are rejected with field-level messages instead of being clamped: a negative delay, a
threshold below 1 or a probe that is not exactly one of http/tcp/exec is a config mistake.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

# One model per concept (corral.settings), shared with config and the sitter.
from corral.settings.probe import Probe
from corral.settings.restart import RestartPolicy

__all__ = ["Probe", "ProcessSpec", "RestartPolicy"]


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
