"""``corral router --workers N``: N forked router processes on one port (``SO_REUSEPORT``).

The kernel spreads new connections over the workers. Each worker is a whole router: its own
pool, its own registry watch (so each follows the registry by itself, and one that restarts
catches up with a snapshot), its own counters; ``/metrics`` on any of them answers the sum
(``corral.router.peers``). The parent only supervises: a worker that dies is started again
(the others keep serving meanwhile), SIGTERM/SIGINT stop them all, and workers ask the kernel
for SIGKILL if the parent dies (``PR_SET_PDEATHSIG``), so the launcher starts and stops the
router as one process tree and nothing is orphaned.

Per worker, not shared: static workers added through the admin API (use the registry or the
config), ``/v1/cancel/{id}`` (reaches the request only on the worker that holds it), queues and
concurrency limits (each worker enforces ``max_concurrency`` on its own share; divide it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from corral.errors import CorralError
from corral.proc.tree import stop_forked
from corral.router.config import RouterSettings

_PR_SET_PDEATHSIG = 1
_GRACE_S = 10.0
_RESTART_DELAY_S = 0.5


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _check_port(settings: RouterSettings) -> None:
    """Fail once, clearly, if the port is taken (each worker binds it with SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((settings.host, settings.port))
        except OSError as exc:
            raise CorralError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None


def _child(settings: RouterSettings, index: int, parent: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 0
    try:
        from corral.router.app import run_one

        run_one(settings, worker_index=index)
    except CorralError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 2
    except BaseException:  # a forked child must never return into the parent's code
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def run_workers(settings: RouterSettings) -> int:
    """Fork ``settings.processes`` workers and supervise them until signalled; the exit code."""
    _check_port(settings)
    peers = Path(tempfile.mkdtemp(prefix="corral-router-"))
    os.environ["CORRAL_ROUTER_PEERS_DIR"] = str(peers)
    parent = os.getpid()
    pids: dict[int, int] = {}  # pid -> worker index
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            _child(settings, index, parent)
        pids[pid] = index

    try:
        for i in range(settings.processes):
            spawn(i)
        while True:
            pid, status = os.wait()
            index = pids.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code == 2:  # a configuration error: every worker would hit it again
                return 2
            print(f"router worker {index} (pid {pid}) exited with {code}; restarting it", file=sys.stderr)
            time.sleep(_RESTART_DELAY_S)
            spawn(index)
    except _Stop:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_forked(list(pids), max(_GRACE_S, settings.drain_timeout_s + 3))  # each worker drains
        shutil.rmtree(peers, ignore_errors=True)
