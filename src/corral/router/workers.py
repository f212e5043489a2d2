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

import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from corral.errors import CorralError
from corral.proc import forked
from corral.router.config import RouterSettings

_GRACE_S = 10.0
_RESTART_DELAY_S = 0.5


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


def run_workers(settings: RouterSettings) -> int:
    """Fork ``settings.processes`` workers and supervise them until signalled; the exit code."""
    _check_port(settings)
    peers = Path(tempfile.mkdtemp(prefix="corral-router-"))
    os.environ["CORRAL_ROUTER_PEERS_DIR"] = str(peers)
    pids: dict[int, int] = {}  # pid -> worker index
    forked.stop_on_signals()

    def spawn(index: int) -> None:
        pids[forked.fork(lambda: _serve(settings, index))] = index

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
    except forked.Stop:
        return 0
    finally:
        forked.ignore_signals()
        forked.stop_forked(list(pids), max(_GRACE_S, settings.drain_timeout_s + 3))  # each worker drains
        shutil.rmtree(peers, ignore_errors=True)


def _serve(settings: RouterSettings, index: int) -> None:
    from corral.router.app import run_one

    run_one(settings, worker_index=index)
