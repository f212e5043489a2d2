"""``--workers N``: N forked serving processes on one port (``SO_REUSEPORT``), one supervisor.

The parent only supervises. Workers stay in its process group (so a group kill stops them
all) and ask the kernel for SIGKILL if the parent dies (``PR_SET_PDEATHSIG``), so nothing is
orphaned even when the parent is SIGKILLed. When one worker exits (``--crash-after``, a crash),
the parent stops the others and exits with that worker's code: the mock fails as a whole, as a
multi-process engine does.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import sys

from corral.errors import CorralError
from corral.mock.config import MockConfig
from corral.mock.server import bind_socket, run_one
from corral.proc.tree import stop_forked

_PR_SET_PDEATHSIG = 1
_GRACE_S = 5.0


class _Stop(Exception):
    pass


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child(config: MockConfig, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    code = 0
    try:
        run_one(config)
    except CorralError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 2
    except BaseException:  # a forked child must never return into the parent's code
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def run_workers(config: MockConfig) -> int:
    """Fork ``config.workers`` workers and supervise them; returns the exit code."""
    if config.port == 0:
        raise CorralError("--workers > 1 needs a fixed --port")
    worker = dataclasses.replace(config, reuse_port=True)
    bind_socket(worker).close()  # fail here, with one clear message, if the port is taken
    parent = os.getpid()
    pids: list[int] = []
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    code = 0
    try:
        for _ in range(config.workers):
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _child(worker, parent)
            pids.append(pid)
        pid, status = os.wait()
        pids.remove(pid)
        code = os.waitstatus_to_exitcode(status)
        code = code if code >= 0 else 128 - code
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_forked(pids, _GRACE_S)
    return code
