"""The restart step: what follows an exit (stop, fail or back off), and the before_restart gate.

``after_exit`` is pure (the caller passes ``now``); the Supervisor acts on its answer. The gate
runs the optional ``before_restart`` hook off the owner task and turns a broken hook into a veto.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from corral.proc.decide import (
    backoff_delay,
    crash_loop,
    failed_start_loop,
    is_stable,
    recent_restarts,
    wants_restart,
)
from corral.proc.spec import RestartPolicy

log = logging.getLogger("corral.proc.supervisor")

# Called with the old process tree's PIDs (the root, the leader of its own process group, first)
# before a process is started again; a string it returns vetoes the start (-> FAILED, that reason).
BeforeRestart = Callable[[list[int]], Awaitable[str | None]]


@dataclass(frozen=True)
class Backoff:
    """Restart bookkeeping since the last stable run: ``attempt`` drives the delay, ``times``
    (monotonic) the crash-loop window."""

    attempt: int = 0
    times: tuple[float, ...] = ()
    failed_starts: int = 0  # starts in a row that never became ready


@dataclass(frozen=True)
class Next:
    """What to do after an exit: ``stop`` (clean exit, no restart), ``fail`` or ``restart``."""

    action: Literal["stop", "fail", "restart"]
    reason: str
    backoff: Backoff
    delay_s: float = 0.0


def after_exit(
    policy: RestartPolicy,
    backoff: Backoff,
    why: str,
    code: int | None,
    *,
    uptime_s: float,
    now: float,
    failed_start: bool = False,
) -> Next:
    """Decide what follows an exit (or a kill for failed probes) described by ``why``;
    ``failed_start``: the process never became ready in this run."""
    if is_stable(policy, uptime_s):
        backoff = Backoff()
    failed = backoff.failed_starts + 1 if failed_start else 0
    if not wants_restart(policy, code):
        if code == 0:
            return Next("stop", why, backoff)
        return Next("fail", f"{why} (restart policy: {policy.policy})", backoff)
    times = recent_restarts(policy, backoff.times, now)
    give_up = crash_loop(policy, times, now) or failed_start_loop(policy, failed)
    if give_up:
        return Next("fail", f"{give_up}; last: {why}", Backoff(backoff.attempt, tuple(times), failed))
    delay = backoff_delay(policy, backoff.attempt)
    return Next("restart", why, Backoff(backoff.attempt + 1, (*times, now), failed), delay)


async def ask_gate(hook: BeforeRestart, name: str, old_pids: list[int]) -> str | None:
    """The hook's veto (None: go ahead); a hook that raises vetoes, naming the error."""
    try:
        return await hook(old_pids)
    except Exception as exc:  # a broken hook must not leave the process down silently
        log.exception("%s: before_restart failed", name)
        return f"before_restart failed: {exc!r}"
