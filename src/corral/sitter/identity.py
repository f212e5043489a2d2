"""Which backend is this sitter's: its state directory, and adopting a port holder by command line.

A sitter's pid file lives in a directory of its own per user and per sitter
(``$XDG_STATE_HOME/corral/sitters/NAME-PORT``, ``~/.local/state`` when unset), not under the
current directory, so the same ``corral sit`` started again from elsewhere finds the pid file of
the backend it started before. Where the pid file is gone (another state dir, a cleaned disk), a
process holding the backend port whose command line is exactly the one this sitter would run is
still ours, unless another live sitter (or launcher) supervises it: then it is that one's.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import psutil

from corral.proc import pidfile
from corral.proc.spawn import port_free
from corral.proc.spec import ProcessSpec
from corral.proc.tree import port_holder

log = logging.getLogger("corral.sitter")

# The corral commands that supervise a backend: a live one among the holder's ancestors owns it.
_SUPERVISORS = frozenset(("sit", "up", "launcher", "_launcher"))


def default_state_dir(name: str, port: int) -> Path:
    """``$XDG_STATE_HOME/corral/sitters/NAME-PORT`` (XDG's default: ``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", name)
    leaf = safe if safe.endswith(f"-{port}") else f"{safe}-{port}"  # default names end in -PORT
    return Path(base) / "corral" / "sitters" / leaf


def _is_corral_supervisor(proc: psutil.Process) -> bool:
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return False
    for i, arg in enumerate(argv):
        # python -m corral sit ..., or the corral script: the next word is the command.
        if arg == "corral" or arg.endswith("/corral") or arg.endswith("corral/__main__.py"):
            return i + 1 < len(argv) and argv[i + 1] in _SUPERVISORS
    return False


def owner(pid: int) -> int | None:
    """The pid of a live corral sitter or launcher above ``pid`` in the process tree, if any."""
    try:
        parents = psutil.Process(pid).parents()
    except psutil.Error:
        return None
    me = os.getpid()
    for p in parents:
        if p.pid not in (1, me) and _is_corral_supervisor(p):
            return p.pid
    return None


def claim_port_holder(spec: ProcessSpec) -> int | None:
    """Record the process holding ``spec``'s port in its pid file, so the supervisor adopts it,
    when its command line is exactly ``spec.argv`` and no other live sitter owns it.

    Returns the claimed pid (None: nothing to claim; the pid file adoption or preflight decides).
    """
    if spec.pid_file is None or not spec.ports or pidfile.adoptable(spec.pid_file, spec.argv):
        return None
    port = spec.ports[0]
    if port_free(port):
        return None
    holder = port_holder(port)
    if holder is None:
        return None
    pid = holder[0]
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return None
    if argv != spec.argv:
        return None
    other = owner(pid)
    if other is not None:
        log.warning(
            "port %d is held by pid %d running our command, but sitter pid %d owns it", port, pid, other
        )
        return None
    pidfile.write(spec.pid_file, pid, spec.argv, spec.name)
    log.warning("adopting pid %d: it holds port %d and runs exactly our command", pid, port)
    return pid
