"""Retry delays for talking to a registry or router that may be down (pure, no clock)."""

from __future__ import annotations


class Backoff:
    """Exponential delays ``initial * factor**n`` capped at ``maximum``; ``reset`` after a success."""

    def __init__(self, initial: float = 0.1, factor: float = 2.0, maximum: float = 5.0) -> None:
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        delay = min(self.initial * self.factor**self.failures, self.maximum)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Forget past failures."""
        self.failures = 0
