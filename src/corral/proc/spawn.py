"""Start a ProcessSpec: checks that fail fast with a clear message, then exec in a new session.

The child's stdout and stderr are a file descriptor opened with O_APPEND on the log file (see
docs/supervision.md): the child never blocks on a slow reader and outlives its supervisor safely.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import subprocess

from corral.proc.spec import ProcessSpec
from corral.proc.tree import port_holder


def child_env(spec: ProcessSpec) -> dict[str, str]:
    """``spec.env`` merged over our environment."""
    return {**os.environ, **spec.env}


def _resolve(spec: ProcessSpec, env: dict[str, str]) -> str | None:
    """Why argv[0] cannot run (not found / not executable), else None."""
    cmd = spec.argv[0]
    if os.sep not in cmd:
        if shutil.which(cmd, path=env.get("PATH", os.defpath)) is None:
            return f"command not found: {cmd!r} (not on PATH)"
        return None
    path = os.path.join(spec.cwd or os.getcwd(), cmd)
    if not os.path.exists(path):
        return f"command not found: {cmd!r}"
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        return f"permission denied: {cmd!r} is not an executable file"
    return None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now (SO_REUSEADDR, as servers set it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _command_problem(spec: ProcessSpec) -> str | None:
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        return f"working directory not found: {spec.cwd}"
    return _resolve(spec, child_env(spec))


async def preflight(spec: ProcessSpec) -> str | None:
    """A reason the spec cannot start at all (so restarting would not help), or None."""
    why = _command_problem(spec)
    if why:
        return why
    for port in spec.ports:
        if not port_free(port):
            holder = await asyncio.to_thread(port_holder, port)
            if holder:
                return f"port {port} is already in use by pid {holder[0]} ({holder[1]})"
            return f"port {port} is already in use (holder unknown)"
    return None


def describe_os_error(spec: ProcessSpec, exc: OSError) -> str:
    """The user-facing message for an exec failure."""
    cmd = spec.argv[0]
    if exc.errno == errno.ENOENT:
        return f"command not found: {cmd!r}"
    if exc.errno == errno.EACCES:
        return f"permission denied: {cmd!r}"
    if exc.errno == errno.ENOEXEC:
        return f"cannot execute {cmd!r}: exec format error (missing #! line?)"
    return f"cannot start {cmd!r}: {exc.strerror or exc}"


async def spawn(spec: ProcessSpec, out_fd: int) -> asyncio.subprocess.Process:
    """Exec ``spec.argv`` in a new session with stdout+stderr on ``out_fd``; OSError on failure."""
    return await asyncio.create_subprocess_exec(
        *spec.argv,
        stdin=subprocess.DEVNULL,
        stdout=out_fd,
        stderr=out_fd,
        env=child_env(spec),
        cwd=spec.cwd,
        start_new_session=True,
    )
