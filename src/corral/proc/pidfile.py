"""PID files with process identity, and exit detection for processes we did not spawn.

A PID alone is not an identity: PIDs are reused. The file records the pid, the process create
time and a hash of the argv, and a process is adopted only when all three still match.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import psutil

# psutil create times come from jiffies since boot; the same process reads back identically,
# a tolerance only guards against float formatting.
_CREATE_TIME_TOLERANCE_S = 0.05


def argv_hash(argv: list[str]) -> str:
    """A stable hash of an argv list."""
    return hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:16]


def write(path: Path, pid: int, argv: list[str], name: str) -> None:
    """Atomically record ``pid``'s identity in ``path``."""
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return  # already gone: nothing to adopt later
    doc = {"pid": pid, "create_time": created, "argv_hash": argv_hash(argv), "name": name, "argv": argv}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def read(path: Path) -> dict[str, Any] | None:
    """The recorded identity, or None when the file is missing or unreadable."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("pid"), int) else None


def remove(path: Path | None) -> None:
    """Delete the pid file if it is there."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def adoptable(path: Path, argv: list[str]) -> psutil.Process | None:
    """The live process ``path`` names, if its create time and argv hash still match."""
    doc = read(path)
    if doc is None:
        return None
    try:
        proc = psutil.Process(doc["pid"])
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        created = proc.create_time()
    except psutil.Error:
        return None
    if abs(created - float(doc.get("create_time", -1))) > _CREATE_TIME_TOLERANCE_S:
        return None  # the pid was reused by another process
    if doc.get("argv_hash") != argv_hash(argv):
        return None
    return proc


async def wait_exit(proc: psutil.Process) -> None:
    """Return when ``proc`` (not our child) exits: a pidfd wakes the loop, no polling.

    Falls back to psutil's wait in a thread where pidfd_open is unavailable (old kernels).
    """
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        await asyncio.to_thread(_psutil_wait, proc)
        return
    if not _same(proc):  # the pid died and was reused between our check and the open
        os.close(fd)
        return
    done = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _same(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _psutil_wait(proc: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        proc.wait()
