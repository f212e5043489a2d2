"""The launcher's files in ``state_dir``: who is running, where, and the lock that keeps it single.

```
state_dir/launcher.json   {"pid", "create_time", "port", "host", "config", "started_at"}  (no token)
state_dir/launcher.lock   flock held by the running launcher
state_dir/launcher.log    output of a detached launcher
state_dir/pids/NAME.pid   corral.proc pid files (identity: pid, create time, argv hash)
state_dir/logs/NAME.log   each process's output
```
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil


@dataclass(frozen=True)
class StateDir:
    """Paths inside one state directory."""

    root: Path

    @property
    def info_file(self) -> Path:
        return self.root / "launcher.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "launcher.lock"

    @property
    def launcher_log(self) -> Path:
        return self.root / "launcher.log"

    def pid_file(self, name: str) -> Path:
        return self.root / "pids" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def pid_files(self) -> list[Path]:
        return sorted((self.root / "pids").glob("*.pid"))


class LauncherLock:
    """An exclusive, non-blocking flock on ``launcher.lock``; released when the process dies."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True if we now hold the lock, False if another launcher does."""
        self.state.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


def write_info(state: StateDir, *, host: str, port: int, config: str) -> None:
    """Record this launcher in ``launcher.json`` (atomically; never the token)."""
    me = psutil.Process()
    doc = {
        "pid": me.pid,
        "create_time": me.create_time(),
        "host": host,
        "port": port,
        "config": config,
        "started_at": time.time(),
    }
    tmp = state.info_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, state.info_file)


def read_info(state: StateDir) -> dict[str, Any] | None:
    """``launcher.json`` if the launcher it names is still alive (same pid and create time)."""
    try:
        doc = json.loads(state.info_file.read_text())
        proc = psutil.Process(int(doc["pid"]))
        if abs(proc.create_time() - float(doc["create_time"])) > 0.05:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    return dict(doc)


def remove_info(state: StateDir) -> None:
    """Forget the launcher record (only ours: the pid must match)."""
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(state.info_file.read_text())
        if doc.get("pid") == os.getpid():
            state.info_file.unlink()
