"""Drive a real launcher from tests: a config on free ports in tmp_path, the CLI and the API.

Shared by the launcher's integration tests; every Stack made through the ``stacks`` fixture is
torn down (``corral down``, then a SIGKILL sweep of whatever the pid files still name).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from support import free_port, kill_pid_files, kill_tree

TOKEN = "launcher-test-token"


def corral(
    *args: str, timeout: float = 150, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m corral ARGS`` and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


class Stack:
    """A config file in tmp_path plus helpers to drive the launcher it describes."""

    def __init__(self, tmp_path: Path, body: str, env: dict[str, str] | None = None) -> None:
        self.dashboard = free_port()
        self.state = tmp_path / "state"
        self.env = env
        header = (
            f'[corral]\nstate_dir = "{self.state}"\n[dashboard]\nport = {self.dashboard}\ntoken = "{TOKEN}"\n'
        )
        self.file = tmp_path / "corral.toml"
        self.file.write_text(header + body.replace("{py}", sys.executable))

    def run(self, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        return corral(*args, "-c", str(self.file), timeout=timeout, env=self.env)

    def up(self) -> subprocess.CompletedProcess[str]:
        r = self.run("up", "-d", "--timeout", "120")
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.request(
            method, f"http://127.0.0.1:{self.dashboard}{path}", headers=headers, timeout=30, **kw
        )

    def services(self) -> dict[str, dict[str, Any]]:
        r = self.api("GET", "/api/services")
        r.raise_for_status()
        return {s["name"]: s for s in r.json()["services"]}

    def launcher_pid(self) -> int | None:
        """The running launcher's PID from its state file, or None when there is none."""
        try:
            return int(json.loads((self.state / "launcher.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def events(self, until: set[tuple[str, str]]) -> list[dict[str, Any]]:
        """Replay the launcher's state changes until every (name, state) in ``until`` was seen."""
        seen: list[dict[str, Any]] = []
        want = set(until)
        url = f"http://127.0.0.1:{self.dashboard}/api/events?replay=true"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.stream("GET", url, headers=headers, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    ev = json.loads(line[6:])
                    seen.append(ev)
                    want.discard((ev["name"], ev["state"]))
                    if not want:
                        break
        return seen

    def tree_pids(self) -> list[psutil.Process]:
        procs = []
        for s in self.services().values():
            root = (s.get("sitter") or s)["pid"]  # a backend's tree hangs off its sitter
            if root:
                p = psutil.Process(root)
                procs += [p, *p.children(recursive=True)]
        return procs

    def sweep(self) -> None:
        """Last resort: SIGKILL the launcher and every process a pid file names."""
        pid = self.launcher_pid()
        if pid is not None:
            kill_tree(pid)
        kill_pid_files(self.state)


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    for s in made:
        if (s.state / "launcher.json").exists() or any(s.state.rglob("*.pid")):
            s.run("down", timeout=60)
        s.sweep()
