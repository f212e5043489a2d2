"""The supervisor's pure deciders: restart or not, backoff, crash loop, probe thresholds."""

from __future__ import annotations

import pytest

from corral.proc.decide import (
    ThresholdCounter,
    backoff_delay,
    crash_loop,
    describe_exit,
    is_stable,
    recent_restarts,
    starting_period,
    wants_restart,
)
from corral.proc.spec import Probe, RestartPolicy


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        ("always", 0, True),
        ("always", 1, True),
        ("always", -9, True),
        ("on-failure", 0, False),
        ("on-failure", 2, True),
        ("on-failure", -15, True),
        ("on-failure", None, True),  # adopted: status unknown counts as a failure
        ("never", 1, False),
        ("never", 0, False),
    ],
)
def test_wants_restart_follows_the_policy(policy: str, code: int | None, expected: bool) -> None:
    assert wants_restart(RestartPolicy(policy=policy), code) is expected  # type: ignore[arg-type]


def test_backoff_grows_by_factor_and_is_capped() -> None:
    pol = RestartPolicy(backoff_initial_s=1, backoff_factor=2, backoff_max_s=5)
    assert [backoff_delay(pol, n) for n in range(5)] == [1, 2, 4, 5, 5]


def test_backoff_zero_initial_restarts_at_once() -> None:
    assert backoff_delay(RestartPolicy(backoff_initial_s=0), 7) == 0


def test_stable_after_resets() -> None:
    pol = RestartPolicy(stable_after_s=30)
    assert not is_stable(pol, 29.9)
    assert is_stable(pol, 30)


def test_recent_restarts_keeps_only_the_window() -> None:
    pol = RestartPolicy(window_s=10)
    assert recent_restarts(pol, [0.0, 5.0, 9.0, 14.0], now=15.0) == [9.0, 14.0]


def test_crash_loop_gives_up_when_one_more_restart_would_exceed_max() -> None:
    pol = RestartPolicy(max_restarts=3, window_s=60)
    assert crash_loop(pol, [1.0, 2.0], now=3.0) is None
    reason = crash_loop(pol, [1.0, 2.0, 3.0], now=4.0)
    assert reason is not None and reason.startswith("crash loop: 3 restarts within 60s")
    # old restarts fall out of the window
    assert crash_loop(pol, [1.0, 2.0, 3.0], now=62.5) is None


def test_max_restarts_zero_never_restarts() -> None:
    assert crash_loop(RestartPolicy(max_restarts=0), [], now=0.0) is not None


def test_describe_exit() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(None) == "unknown exit status"


def test_readiness_polls_fast_while_starting() -> None:
    assert starting_period(Probe(tcp="127.0.0.1:1", period_s=10)) == 0.1
    assert starting_period(Probe(tcp="127.0.0.1:1", period_s=0.05)) == 0.05


def test_threshold_counter_needs_consecutive_results() -> None:
    c = ThresholdCounter(Probe(tcp="h:1", success_threshold=2, failure_threshold=3))
    assert [c.observe(x) for x in (True, False, True, True)] == [None, None, None, True]
    assert [c.observe(x) for x in (False, False, True, False, False, False)] == [
        None,
        None,
        None,
        None,
        None,
        False,
    ]
    assert c.observe(False) is None  # already down: no repeated verdict


def test_threshold_counter_from_known_good_reports_only_changes() -> None:
    c = ThresholdCounter(Probe(tcp="h:1", failure_threshold=1), initial=True)
    assert c.observe(True) is None
    assert c.observe(False) is False
    assert c.observe(True) is True
