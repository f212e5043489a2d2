"""The restart policy shared by config (``[service.restart]``), launcher, sitter and proc."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RestartPolicy(BaseModel):
    """When to restart, how fast, and when to give up (supervisor's startsecs/backoff ideas)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["always", "on-failure", "never"] = "always"
    max_restarts: int = Field(default=10, ge=0)
    window_s: float | None = Field(default=300, gt=0)  # None: every restart since start counts
    backoff_initial_s: float = Field(default=1, ge=0)
    backoff_factor: float = Field(default=2, ge=1)
    backoff_max_s: float = Field(default=60, ge=0)
    stable_after_s: float = Field(default=30, ge=0)
    # Give up after this many starts in a row that never became ready (an exit, or the start
    # timeout, before the first ready): a crash loop whatever max_restarts says. None: no limit.
    max_failed_starts: int | None = Field(default=5, ge=1)
