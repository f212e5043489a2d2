"""One backend instance as the router sees it: where it is, what it serves, how loaded it is.

Fields are plain attributes (``__slots__``) read and written on the event loop only, so the hot
path pays attribute access and nothing else: no locks, no properties.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Circuit states (strings so /metrics and /workers can show them as they are).
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Instance:
    """A routable backend. ``source`` is ``"static"`` (flag, config, admin API) or ``"registry"``."""

    __slots__ = (
        "breaker_failures",
        "circuit",
        "cooldown_s",
        "cooling",
        "failures",
        "id",
        "max_concurrency",
        "models",
        "notify",
        "open_until",
        "outstanding",
        "probe_ok",
        "reachable",
        "source",
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
    ) -> None:
        self.url = url.rstrip("/")
        self.id = id or self.url
        self.models = models
        self.source = source
        self.max_concurrency = max_concurrency
        self.state = state  # registry state, or "healthy"/"unhealthy" from our probe
        self.probe_ok = state == "healthy"
        self.reachable = True  # False after a connect error, until a probe or the registry says so
        self.outstanding = 0
        self.breaker_failures = breaker_failures
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.circuit = CLOSED
        self.open_until = 0.0
        self.trial_in_flight = False
        self.cooling = False  # waiting in the pool's heap for its circuit's trial time
        # Set by the pool: called after a change of circuit or reachability, so that the
        # model's routable set follows (``Pool.refresh``). Direct attribute writers call it too.
        self.notify: Callable[[Instance], None] | None = None

    @property
    def healthy(self) -> bool:
        """Healthy by its source and reachable by us (the circuit is separate)."""
        return self.probe_ok and self.reachable

    def routable(self, now: float) -> bool:
        """Whether a new request may go here now (health, circuit, concurrency limit)."""
        if not (self.probe_ok and self.reachable):
            return False
        if self.max_concurrency and self.outstanding >= self.max_concurrency:
            return False
        if self.circuit is CLOSED:
            return True
        if self.circuit is OPEN:
            return now >= self.open_until
        return not self.trial_in_flight

    def on_dispatch(self, now: float) -> None:
        """Count a request sent here; an expired open circuit lets exactly one trial through."""
        self.outstanding += 1
        if self.circuit is not CLOSED:
            self.circuit = HALF_OPEN
            self.trial_in_flight = True

    def on_success(self) -> None:
        """The request got a usable answer: the circuit closes."""
        self.failures = 0
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
            "outstanding": self.outstanding,
            "max_concurrency": self.max_concurrency,
        }
