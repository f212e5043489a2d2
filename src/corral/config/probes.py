"""The probes the plan gives each process: readiness polls fast, liveness slowly."""

from __future__ import annotations

from corral.settings import Probe

READY_PERIOD_S = 0.2
LIVE_PERIOD_S = 5.0


def http_probe(url: str, ready: bool) -> Probe:
    """An HTTP GET probe of ``url`` (readiness period when ``ready``, else liveness)."""
    period = READY_PERIOD_S if ready else LIVE_PERIOD_S
    return Probe(http=url, period_s=period, timeout_s=2, failure_threshold=3)


def probe_from(health: str | list[str], ready: bool) -> Probe:
    """A ``health`` shorthand -> probe (fast period for readiness, slow for liveness)."""
    period = READY_PERIOD_S if ready else LIVE_PERIOD_S
    if isinstance(health, list):
        return Probe.shorthand(health, period_s=period, timeout_s=5)
    if health.startswith("tcp://"):
        return Probe.shorthand(health, period_s=period)
    return Probe.shorthand(health, period_s=period, timeout_s=2, failure_threshold=3)
