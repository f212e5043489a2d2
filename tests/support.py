"""Test helpers shared by every test area (import as ``from support import ...``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil


def free_port() -> int:
    """A port free on 127.0.0.1 whose port+1 is free too (sitters listen on port+1)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p >= 65000:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return int(p)
    raise RuntimeError("no free port pair")


def wait_until(pred: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``pred`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as exc:  # the thing polled may not be up yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}: last error {last_exc!r}")


def wait_http(url: str, timeout: float = 15.0, status: int = 200) -> httpx.Response:
    """Wait until GET ``url`` answers ``status``."""

    def ok() -> httpx.Response | None:
        r = httpx.get(url, timeout=1.0)
        return r if r.status_code == status else None

    return wait_until(ok, timeout, what=f"GET {url} -> {status}")


class CorralProcs:
    """Runs ``python -m corral ARGS`` in its own process group; kills every tree on close."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        log: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        out = open(log, "ab") if log else subprocess.DEVNULL
        p = subprocess.Popen(
            [sys.executable, "-m", "corral", *args],
            env=full_env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            kill_tree(p.pid)


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes of ``procs`` that still run (zombies count as gone)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant."""
    try:
        parent = psutil.Process(pid)
        kids = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for k in kids:
        try:
            k.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def kill_pid_files(state_dir: Path) -> None:
    """SIGKILL every process tree a pid file under a corral state dir names (a test's last resort)."""
    for pid_file in state_dir.rglob("*.pid"):
        try:
            kill_tree(int(json.loads(pid_file.read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            pass


_TREE = (
    "import subprocess, sys, time\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print(p.pid, flush=True)\n"
    "time.sleep(120)\n"
)


@contextlib.contextmanager
def two_level_tree() -> Iterator[tuple[int, int]]:
    """(child PID, grandchild PID): sleeping processes in a new session the child leads;
    the whole tree is killed on exit."""
    child = subprocess.Popen([sys.executable, "-c", _TREE], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        yield child.pid, grandchild
    finally:
        kill_tree(child.pid)  # the grandchild is in the child's process group: killed with it
        if child.stdout:
            child.stdout.close()
