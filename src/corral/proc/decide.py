"""Pure deciders for the supervisor: restart or not, how long to wait, when to give up.

No I/O, no logging, no clocks: the caller passes ``now`` (monotonic seconds) so every rule is a
plain function with unit tests.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

from corral.proc.spec import Probe, RestartPolicy


def wants_restart(policy: RestartPolicy, exit_code: int | None) -> bool:
    """Whether the policy restarts a process that exited with ``exit_code``.

    ``None`` (an adopted process, whose status only its real parent could read) counts as a
    failure, so ``on-failure`` restarts it.
    """
    if policy.policy == "never":
        return False
    if policy.policy == "on-failure":
        return exit_code != 0
    return True


def backoff_delay(policy: RestartPolicy, attempt: int) -> float:
    """Seconds to wait before restart number ``attempt`` (0-based) since the last stable run."""
    delay = policy.backoff_initial_s * policy.backoff_factor ** max(attempt, 0)
    return min(delay, policy.backoff_max_s)


def is_stable(policy: RestartPolicy, uptime_s: float) -> bool:
    """A run that lasted ``stable_after_s`` resets the backoff and the restart count."""
    return uptime_s >= policy.stable_after_s


def recent_restarts(policy: RestartPolicy, restart_times: Sequence[float], now: float) -> list[float]:
    """The restart times (monotonic) that still fall inside the policy window (all: no window)."""
    window = policy.window_s
    return [t for t in restart_times if window is None or now - t < window]


def crash_loop(policy: RestartPolicy, restart_times: Sequence[float], now: float) -> str | None:
    """Why to give up (a message) when one more restart would exceed ``max_restarts``, else None."""
    recent = recent_restarts(policy, restart_times, now)
    if len(recent) >= policy.max_restarts:
        if policy.window_s is None:
            return f"crash loop: gave up after {len(recent)} restarts (max_restarts={policy.max_restarts})"
        return (
            f"crash loop: {len(recent)} restarts within {policy.window_s:g}s"
            f" (max_restarts={policy.max_restarts})"
        )
    return None


def failed_start_loop(policy: RestartPolicy, failed_starts: int) -> str | None:
    """Why to give up when ``failed_starts`` starts in a row never became ready, else None."""
    limit = policy.max_failed_starts
    if limit is not None and failed_starts >= limit:
        return f"crash loop: {failed_starts} starts in a row never became ready"
    return None


def describe_exit(code: int | None) -> str:
    """``exit code 1``, ``signal SIGKILL`` or ``unknown exit status`` (adopted process)."""
    if code is None:
        return "unknown exit status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def starting_period(probe: Probe) -> float:
    """Readiness polls fast while STARTING so that ready is seen within ~0.1 s of being true."""
    return min(probe.period_s, 0.1)


class ThresholdCounter:
    """Kubernetes threshold logic: flips after N consecutive successes or M consecutive failures.

    ``observe`` returns the new verdict when it changes, else None. ``verdict`` starts as
    ``initial`` (None: unknown, so the first threshold reached decides).
    """

    def __init__(self, probe: Probe, initial: bool | None = None) -> None:
        self.success_threshold = probe.success_threshold
        self.failure_threshold = probe.failure_threshold
        self.verdict = initial
        self.successes = 0
        self.failures = 0

    def observe(self, ok: bool) -> bool | None:
        """Record one probe result; return the verdict if it just changed."""
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= self.success_threshold and self.verdict is not True:
                self.verdict = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= self.failure_threshold and self.verdict is not False:
                self.verdict = False
                return False
        return None
