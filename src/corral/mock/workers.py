"""``--workers N``: N forked serving processes on one port (``SO_REUSEPORT``), one supervisor.

The parent only supervises. Workers stay in its process group (so a group kill stops them
all) and ask the kernel for SIGKILL if the parent dies (``PR_SET_PDEATHSIG``), so nothing is
orphaned even when the parent is SIGKILLed. When one worker exits (``--crash-after``, a crash),
the parent stops the others and exits with that worker's code: the mock fails as a whole, as a
multi-process engine does.
"""

from __future__ import annotations

import dataclasses
import os

from corral.errors import CorralError
from corral.mock.config import MockConfig
from corral.mock.server import bind_socket, run_one
from corral.proc import forked

_GRACE_S = 5.0


def run_workers(config: MockConfig) -> int:
    """Fork ``config.workers`` workers and supervise them; returns the exit code."""
    if config.port == 0:
        raise CorralError("--workers > 1 needs a fixed --port")
    worker = dataclasses.replace(config, reuse_port=True)
    bind_socket(worker).close()  # fail here, with one clear message, if the port is taken
    pids: list[int] = []
    forked.stop_on_signals()
    code = 0
    try:
        for _ in range(config.workers):
            pids.append(forked.fork(lambda: run_one(worker)))
        pid, status = os.wait()
        pids.remove(pid)
        code = os.waitstatus_to_exitcode(status)
        code = code if code >= 0 else 128 - code
    except forked.Stop:
        pass
    finally:
        forked.ignore_signals()
        forked.stop_forked(pids, _GRACE_S)
    return code
