"""One backend instance as the router sees it: where it is, what it serves, how loaded it is.

Fields are plain attributes (``__slots__``) read and written on the event loop only, so the hot
path pays attribute access and nothing else: no locks, no properties.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Circuit states (strings so /metrics and /workers can show them as they are).
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_EWMA_ALPHA = 0.2
_FLOOR_RISE = 0.05  # the floor follows a lower sample at once, a higher one 5% of the way


class Instance:
    """A routable backend. ``source`` is ``"static"`` (flag, config, admin API) or ``"registry"``."""

    __slots__ = (
        "breaker_failures",
        "circuit",
        "cooldown_s",
        "cooling",
        "ejected",
        "ejected_until",
        "ejections",
        "engine_base",
        "engine_load",
        "ewma_s",
        "failures",
        "floor_s",
        "id",
        "max_concurrency",
        "models",
        "notify",
        "open_until",
        "outstanding",
        "probe_ok",
        "reachable",
        "reason",
        "samples",
        "source",
        "stalls",
        "stalls_total",
        "state",
        "trial_in_flight",
        "url",
    )

    def __init__(
        self,
        url: str,
        models: tuple[str, ...] = (),
        *,
        source: str = "static",
        id: str | None = None,
        max_concurrency: int = 0,
        state: str = "starting",
        breaker_failures: int = 5,
        cooldown_s: float = 5.0,
        reason: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.id = id or self.url
        self.models = models
        self.source = source
        self.max_concurrency = max_concurrency
        self.state = state  # registry state, or "healthy"/"unhealthy" from our probe
        self.probe_ok = state == "healthy"
        self.reason = reason  # why the source says it is not healthy (e.g. a failed generation probe)
        self.reachable = True  # False after a connect error, until a probe or the registry says so
        self.outstanding = 0
        self.breaker_failures = breaker_failures
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.circuit = CLOSED
        self.open_until = 0.0
        self.trial_in_flight = False
        # Load-aware routing: the engine's own queue (running + waiting, from its /metrics; -1
        # unknown) with our ``outstanding`` at that scrape, and an EWMA of this instance's time
        # to first byte (0 until the first answer).
        self.engine_load = -1.0
        self.engine_base = 0
        self.ewma_s = 0.0
        # The lower envelope of its times to first byte: its speed with the queueing left out
        # (a burst of cold prompts lifts the EWMA for long; the floor comes back at once).
        self.floor_s = 0.0
        self.samples = 0  # times to first byte observed (the speed probe looks for idle ones)
        self.cooling = False  # waiting in the pool's heap for its circuit's trial time
        # Set by the pool: called after a change of circuit or reachability, so that the
        # model's routable set follows (``Pool.refresh``). Direct attribute writers call it too.
        self.notify: Callable[[Instance], None] | None = None
        # Stall watchdog / outlier ejection (corral.router.health owns these).
        self.stalls = 0  # consecutive timeouts
        self.stalls_total = 0
        self.ejected = False
        self.ejected_until = 0.0
        self.ejections = 0

    def inherit(self, old: Instance) -> None:
        """Carry the live state of the instance this one replaces (same id, new registry view)."""
        self.outstanding = old.outstanding
        self.failures, self.circuit, self.open_until = old.failures, old.circuit, old.open_until
        self.trial_in_flight = old.trial_in_flight
        self.stalls, self.stalls_total = old.stalls, old.stalls_total
        self.ejected, self.ejected_until, self.ejections = old.ejected, old.ejected_until, old.ejections
        self.ewma_s, self.floor_s, self.samples = old.ewma_s, old.floor_s, old.samples
        if not old.reachable and not self.probe_ok:
            self.reachable = False

    @property
    def healthy(self) -> bool:
        """Healthy by its source and reachable by us (the circuit is separate)."""
        return self.probe_ok and self.reachable

    def routable(self, now: float) -> bool:
        """Whether a new request may go here now (health, circuit, concurrency limit)."""
        if not (self.probe_ok and self.reachable) or self.ejected:
            return False
        if self.max_concurrency and self.outstanding >= self.max_concurrency:
            return False
        if self.circuit is CLOSED:
            return True
        if self.circuit is OPEN:
            return now >= self.open_until
        return not self.trial_in_flight

    @property
    def load(self) -> float:
        """Requests queued or running here: the engine's count corrected by what we sent since
        it was read, or our own in-flight count when the engine tells nothing (or less)."""
        if self.engine_load < 0:
            return self.outstanding
        return max(self.outstanding, self.engine_load + self.outstanding - self.engine_base)

    def observe(self, seconds: float) -> None:
        """Fold one time to first byte into the EWMA (the instance's speed as routing sees it)."""
        self.ewma_s = seconds if not self.ewma_s else self.ewma_s + _EWMA_ALPHA * (seconds - self.ewma_s)
        floor = self.floor_s
        self.floor_s = seconds if not floor or seconds < floor else floor + _FLOOR_RISE * (seconds - floor)
        self.samples += 1

    def on_dispatch(self, now: float) -> None:
        """Count a request sent here; an expired open circuit lets exactly one trial through."""
        self.outstanding += 1
        if self.circuit is not CLOSED:
            self.circuit = HALF_OPEN
            self.trial_in_flight = True

    def on_success(self) -> None:
        """The request got a usable answer: the circuit closes, the stall streak ends."""
        self.failures = 0
        self.stalls = 0
        if self.circuit is not CLOSED:
            self.circuit = CLOSED
            self.trial_in_flight = False
            if self.notify is not None:
                self.notify(self)

    def on_failure(self, connect: bool = False) -> None:
        """A failed attempt. A connect error takes the instance out of rotation at once."""
        if connect:
            self.reachable = False
        self.failures += 1
        if self.circuit is HALF_OPEN or self.failures >= self.breaker_failures:
            self.circuit = OPEN
            self.open_until = time.monotonic() + self.cooldown_s
            self.trial_in_flight = False
        if self.notify is not None:
            self.notify(self)

    def as_dict(self) -> dict[str, object]:
        """The view served by ``/workers`` and ``/list_workers``."""
        return {
            "id": self.id,
            "url": self.url,
            "models": list(self.models),
            "source": self.source,
            "state": self.state,
            "healthy": self.healthy,
            "reachable": self.reachable,
            "circuit": self.circuit,
            "out_reason": out_reason(self, time.monotonic()),
            "stalls": self.stalls,
            "stalls_total": self.stalls_total,
            "ejections": self.ejections,
            "outstanding": self.outstanding,
            "max_concurrency": self.max_concurrency,
            "load": self.load,
            "engine_load": None if self.engine_load < 0 else self.engine_load,
            "ttfb_ewma_ms": round(self.ewma_s * 1000, 2),
            "ttfb_floor_ms": round(self.floor_s * 1000, 2),
        }


# Why an instance takes no new requests: a bounded set (it is a Prometheus label value).
OUT_REASONS = (
    "draining",
    "starting",
    "unhealthy",
    "generation_probe_failed",
    "unreachable",
    "stalled",
    "circuit_open",
)
_STARTING = frozenset(("starting", "restarting"))


def typical_floor(floors: list[float]) -> float:
    """The typical of some instances' (sorted, non-zero) time-to-first-byte floors: their lower
    median (of two, the faster: with the upper one a pair never tells its slow member); 0 if none.
    An instance is slow when its floor is above this by more than ``speed_slack``."""
    return floors[(len(floors) - 1) // 2] if floors else 0.0


def out_reason(inst: Instance, now: float) -> str | None:
    """Why ``inst`` is out of rotation (one of :data:`OUT_REASONS`), or None when it is in.

    The source's view comes first (draining, starting, a failed probe), then ours (connect
    error, stall ejection, open circuit). Being at its concurrency limit is busy, not out.
    """
    if inst.state == "draining":
        return "draining"
    if not inst.probe_ok:
        if inst.state in _STARTING:
            return "starting"
        return inst.reason if inst.reason in OUT_REASONS else "unhealthy"
    if not inst.reachable:
        return "unreachable"
    if inst.ejected:
        return "stalled"
    if inst.circuit is OPEN and now < inst.open_until:
        return "circuit_open"
    return None
