"""The generation probe's settings: ``[[backend]] generation_probe`` in corral.toml, the sitter's
``[generation_probe]`` table (its settings file or ``--config-file``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GenerationProbe(BaseModel):
    """A 1-token completion on a schedule, for engines whose health path can lie.

    ``enabled``: None follows the preset (on for vLLM, whose API server answers ``/health`` after
    its engine died). Sent every ``interval_s`` only when the backend finished no request since
    the last one (read from ``busy_metric`` on its ``/metrics``: a busy instance's traffic is the
    probe). ``failures`` failed or timed-out probes in a row take the instance out of rotation
    (registry state ``unhealthy``, ``out_reason = "generation_probe_failed"``); one success brings
    it back. ``restart_after``: that many failures in a row restart the backend (off unless set).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    interval_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    failures: int = Field(default=2, ge=1)
    restart_after: int | None = Field(default=None, ge=1)
    busy_metric: str | None = None  # None: the preset's counter of finished requests, if any
