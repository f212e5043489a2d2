"""Forked worker processes on one port: ``--workers N`` of the router and of the mock.

The parent forks and supervises. Each child asks the kernel for SIGKILL when the parent dies
(``PR_SET_PDEATHSIG``), so nothing is orphaned even if the parent is SIGKILLed; runs its main
with the default SIGTERM/SIGINT handlers; and never returns into the parent's code (a config
error exits 2, anything else 1, with the traceback). SIGTERM/SIGINT in the parent raise
:class:`Stop`; :func:`stop_forked` then stops every child (grace, SIGKILL) and reaps them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from corral.errors import CorralError

_PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """SIGTERM or SIGINT reached the parent."""


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop


def stop_on_signals() -> None:
    """In the parent: SIGTERM and SIGINT raise :class:`Stop` (call before the first fork)."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)


def ignore_signals() -> None:
    """In the parent, while it stops its children: a second Ctrl-C must not cut that short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def fork(main: Callable[[], object]) -> int:
    """Fork a child that runs ``main`` and exits; returns its PID (in the parent)."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(main, parent)
    return pid


def _child(main: Callable[[], object], parent: int) -> NoReturn:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 0
    try:
        main()
    except CorralError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 2
    except BaseException:  # a forked child must never return into the parent's code
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def stop_forked(pids: list[int], grace_s: float) -> None:
    """SIGTERM every forked child (ours, by PID), wait up to ``grace_s``, SIGKILL what is left,
    reap all."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    continue
            alive.discard(pid)
        time.sleep(0.02)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
