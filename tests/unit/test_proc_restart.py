"""The pure steps split out of the Supervisor: the restart decision and the probe verdict judge."""

from __future__ import annotations

from corral.proc.events import State
from corral.proc.messages import Verdict
from corral.proc.probing import Health, judge
from corral.proc.restart import Backoff, after_exit
from corral.proc.spec import RestartPolicy


def test_after_exit_backs_off_then_gives_up_in_a_crash_loop() -> None:
    pol = RestartPolicy(max_restarts=2, window_s=60, backoff_initial_s=1, backoff_factor=2)
    b = Backoff()
    delays = []
    for now in (0.0, 1.0):
        step = after_exit(pol, b, "exited with exit code 1", 1, uptime_s=0.1, now=now)
        assert step.action == "restart"
        delays.append(step.delay_s)
        b = step.backoff
    assert delays == [1, 2] and b == Backoff(2, (0.0, 1.0))
    step = after_exit(pol, b, "exited with exit code 1", 1, uptime_s=0.1, now=2.0)
    assert step.action == "fail" and step.reason.startswith("crash loop: 2 restarts within 60s")


def test_after_exit_clean_exit_stops_and_a_stable_run_resets_the_backoff() -> None:
    on_failure = RestartPolicy(policy="on-failure")
    assert after_exit(on_failure, Backoff(), "exited with exit code 0", 0, uptime_s=1, now=0).action == "stop"
    never = RestartPolicy(policy="never")
    step = after_exit(never, Backoff(), "exited with exit code 3", 3, uptime_s=1, now=0)
    assert step.action == "fail" and step.reason.endswith("(restart policy: never)")
    pol = RestartPolicy(stable_after_s=30)
    step = after_exit(pol, Backoff(5, (1.0, 2.0)), "x", 1, uptime_s=31, now=100)
    assert step.delay_s == pol.backoff_initial_s and step.backoff == Backoff(1, (100,))


def test_judge_liveness_failure_kills_unless_policy_never_and_readiness_flips_health() -> None:
    h = Health(ready=True, live=True)
    assert judge(Verdict(1, "liveness", False, "timeout"), State.HEALTHY, h, "always") == "kill"
    assert judge(Verdict(1, "liveness", False, "timeout"), State.HEALTHY, h, "never") == "unhealthy"
    h = Health(ready=True, live=True)
    assert judge(Verdict(1, "readiness", False, "503"), State.HEALTHY, h, "always") == "unhealthy"
    assert judge(Verdict(1, "readiness", True, "200"), State.UNHEALTHY, h, "always") == "healthy"
    assert judge(Verdict(1, "startup", True, "200"), State.STARTING, Health(), "always") == "ready"
    assert judge(Verdict(1, "startup", False, "refused"), State.STARTING, Health(), "always") == "none"
