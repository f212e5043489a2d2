"""How one try at an instance ends short of an answer, and the watchdog limits it runs under."""

from __future__ import annotations

from corral.router.config import RouterSettings
from corral.router.upstream import Timeouts


class AttemptFailed(Exception):
    """An attempt failed before anything reached the client; try another instance.

    ``timeout``: it was the watchdog (the answer, if no other instance does better, is a 504).
    """

    def __init__(self, message: str, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class Watchdog:
    """One model's watchdog settings, resolved once: upstream timeouts per kind, retry rule."""

    __slots__ = ("plain", "retry", "stream")

    def __init__(self, settings: RouterSettings, model: str) -> None:
        t = settings.timeouts
        first, inter, response, self.retry = t.for_model(model)
        self.plain = Timeouts(t.connect, response, response, response)
        self.stream = Timeouts(t.connect, inter, None, first)


class NoRetry(Exception):
    """A watchdog timeout that must not be retried (``retry_on_timeout = false``)."""
