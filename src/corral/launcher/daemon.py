"""``corral up -d``: run the launcher as a background daemon and wait until all is healthy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from corral.config import Plan
from corral.errors import CorralError
from corral.launcher.client import ControlClient
from corral.launcher.logtail import read_tail
from corral.launcher.state import StateDir, read_info

_POLL_S = 0.1


class UpFailed(CorralError):
    """Something did not become healthy; the message says what, why, and its last log lines."""


class Daemon:
    """The forked launcher, seen from the ``corral up -d`` that started it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def fork_daemon(plan: Plan) -> Daemon:
    """Fork the launcher into a new session, its output in launcher.log.

    Forking (rather than exec'ing ``corral up --foreground-daemon``) saves a Python start and
    the config load: the child already has both. Safe here: no thread or event loop exists yet.
    """
    from corral.launcher.server import run_launcher

    state = StateDir(plan.state_dir)
    state.root.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return Daemon(pid)
    code = 1
    try:
        os.setsid()
        fd = os.open(state.launcher_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        try:
            import uvloop

            code = uvloop.run(run_launcher(plan, interactive=False))
        except ImportError:  # pragma: no cover - non-Linux
            import asyncio

            code = asyncio.run(run_launcher(plan, interactive=False))
    except CorralError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def spawn_daemon(plan: Plan, config_file: str) -> subprocess.Popen[bytes]:
    """Start ``corral up --foreground-daemon`` in a new session, its output in launcher.log."""
    state = StateDir(plan.state_dir)
    state.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(state.launcher_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corral",
                "up",
                "-c",
                str(Path(config_file).resolve()),
                "--foreground-daemon",
            ],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        os.close(fd)


def _wanted(services: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # A parked on-demand replica starts with its model's first request, not with `up`.
    return [s for s in services if (s.get("auto_start") or s["state"] != "stopped") and not s.get("parked")]


def wait_healthy(
    plan: Plan, daemon: Daemon | subprocess.Popen[bytes], timeout: float
) -> list[dict[str, Any]]:
    """Poll until every wanted process is healthy; UpFailed naming the first that failed."""
    state = StateDir(plan.state_dir)
    deadline = time.monotonic() + timeout
    client: ControlClient | None = None
    services: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            tail = "\n".join(read_tail(state.launcher_log, 15))
            raise UpFailed(f"the launcher exited with status {daemon.returncode}:\n{tail}")
        if client is None:
            info = read_info(state)
            if info is not None and info["pid"] == daemon.pid:
                client = ControlClient.for_plan(plan)
        if client is not None:
            try:
                services = client.get("/api/services")["services"]
            except CorralError:
                services = []  # the server may still be starting
            failed = [s for s in services if s["state"] == "failed"]
            if failed:
                raise UpFailed(_describe_failure(client, failed[0]))
            wanted = _wanted(services)
            if wanted and all(s["state"] == "healthy" for s in wanted):
                return services
        time.sleep(_POLL_S)
    pending = [
        f"{s['name']} ({s['state']}: {s.get('reason') or '-'})"
        for s in _wanted(services)
        if s["state"] != "healthy"
    ]
    raise UpFailed(f"not healthy after {timeout:g}s: {', '.join(pending) or 'launcher not answering'}")


def _describe_failure(client: ControlClient, svc: dict[str, Any]) -> str:
    tail = svc.get("tail") or []
    if not tail:
        try:
            tail = client.get(f"/api/services/{svc['name']}/logs?tail=15")["lines"]
        except CorralError:
            tail = []
    lines = "\n".join(f"  {line}" for line in tail[-15:])
    return f"{svc['name']} failed: {svc.get('reason') or 'unknown reason'}" + (
        f"\nlast log lines:\n{lines}" if lines else ""
    )
