"""The launcher shows each backend as its sitter sees it: state, PID, restarts and reason, with
the sitter's own state beside it; a backend that fails for good makes `corral up -d` fail at once.

Real launcher, real sitters, real backends (a missing command, a port held by this test, a
backend that exits at once, a mock engine, python's http.server).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import psutil
from launcher_helpers import Stack

from support import free_port, wait_until

NO_ROUTING = "[registry]\nenabled = false\n[router]\nenabled = false\n"


def _status(s: Stack) -> dict[str, dict]:
    r = s.run("status", "--json")
    return {x["name"]: x for x in json.loads(r.stdout)["services"]}


def test_backend_command_not_found_fails_up_at_once_and_status_says_why(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    body = NO_ROUTING + (
        f'[[backend]]\nname = "ghost"\ncommand = ["no-such-inference-server"]\nport = {free_port()}\n'
    )
    s = Stack(tmp_path, body)
    stacks.append(s)
    t0 = time.monotonic()
    r = s.run("up", "-d", "--timeout", "60")
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ghost-0 failed" in r.stderr and "command not found" in r.stderr, r.stderr
    assert took < 30, f"up -d waited {took:.1f}s for a backend that can never start"
    ghost = _status(s)["ghost-0"]
    assert ghost["state"] == "failed" and "command not found" in ghost["reason"]
    assert ghost["pid"] is None  # no backend process
    sitter = ghost["sitter"]
    assert sitter["pid"] and psutil.Process(sitter["pid"]).is_running()  # the sitter itself runs
    assert "sit" in psutil.Process(sitter["pid"]).cmdline()
    table = s.run("status")
    assert table.returncode == 1 and "failed" in table.stdout and "command not found" in table.stdout


def test_backend_port_taken_by_another_program_fails_naming_the_holder(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    port = free_port()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen(1)
    try:
        body = NO_ROUTING + (
            f'[[backend]]\nname = "web"\ncommand = ["{{py}}", "-m", "http.server", "{port}"]\n'
            f'port = {port}\nhealth_path = "/"\n'
        )
        s = Stack(tmp_path, body)
        stacks.append(s)
        r = s.run("up", "-d", "--timeout", "60")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "web-0 failed" in r.stderr and str(port) in r.stderr, r.stderr
        assert f"pid {os.getpid()}" in r.stderr  # who holds it
    finally:
        squatter.close()


def test_backend_crash_loop_is_failed_with_its_last_output_whatever_max_restarts(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    crash = "import sys; print('ValueError: Model path does not exist', flush=True); sys.exit(1)"
    body = NO_ROUTING + (
        f'[[backend]]\nname = "llama"\ncommand = ["{{py}}", "-c", "{crash}"]\nport = {free_port()}\n'
        "restart_delay = 0.1\n"  # max_restarts stays at its default, 10000
    )
    s = Stack(tmp_path, body)
    stacks.append(s)
    r = s.run("up", "-d", "--timeout", "60")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "llama-0 failed" in r.stderr and "crash loop" in r.stderr, r.stderr
    assert "Model path does not exist" in r.stderr  # the engine's own last lines
    llama = s.services()["llama-0"]
    assert llama["state"] == "failed" and llama["restarts"] == 4  # the backend's, not the sitter's
    assert any("Model path does not exist" in line for line in llama["tail"])
    assert llama["sitter"]["restarts"] == 0


def test_status_shows_the_backend_pid_and_restarts_and_the_sitter_apart(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    body = NO_ROUTING + (
        f'[[backend]]\nname = "chat"\npreset = "mock"\nmodels = ["m"]\nport = {free_port()}\n'
        "restart_delay = 0.1\n"
    )
    s = Stack(tmp_path, body)
    stacks.append(s)
    s.up()
    chat = s.services()["chat-0"]
    assert chat["state"] == "healthy" and chat["restarts"] == 0
    backend, sitter = chat["pid"], chat["sitter"]["pid"]
    assert backend != sitter and "mock" in psutil.Process(backend).cmdline()
    assert psutil.Process(backend).ppid() == sitter

    os.kill(backend, signal.SIGKILL)

    def restarted() -> dict | None:
        c = s.services()["chat-0"]
        return c if c["state"] == "healthy" and c["pid"] not in (None, backend) else None

    after = wait_until(restarted, timeout=30, what="backend restarted")
    assert after["restarts"] == 1 and after["sitter"]["pid"] == sitter and after["sitter"]["restarts"] == 0
    row = _status(s)["chat-0"]
    assert row["pid"] == after["pid"] and row["restarts"] == 1

    # The launcher dies, its children do not: `status` says so and names them.
    launcher = s.launcher_pid()
    assert launcher is not None
    os.kill(launcher, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(launcher) or psutil.Process(launcher).status() == "zombie")
    dead = s.run("status")
    assert dead.returncode == 1
    assert "still running" in dead.stdout and "corral down" in dead.stdout, dead.stdout
    assert f"pid {sitter}" in dead.stdout and f"pid {after['pid']}" in dead.stdout
    left = json.loads(s.run("status", "--json").stdout)
    assert left["running"] is False and {p["pid"] for p in left["left_running"]} >= {sitter, after["pid"]}


def test_logs_show_the_engine_output_with_sitter_lines_marked(tmp_path: Path, stacks: list[Stack]) -> None:
    port = free_port()
    body = NO_ROUTING + (
        f'[[backend]]\nname = "web"\ncommand = ["{{py}}", "-u", "-m", "http.server", "{port}",'
        f' "--bind", "127.0.0.1"]\nport = {port}\nhealth_path = "/"\n'
    )
    s = Stack(tmp_path, body)
    stacks.append(s)
    s.up()
    both = s.run("logs", "web-0", "--tail", "200").stdout
    assert "Serving HTTP on 127.0.0.1" in both  # the engine's own stdout
    assert any(line.startswith("[sitter] ") for line in both.splitlines())
    only = s.run("logs", "web-0", "--sitter", "--tail", "200").stdout.splitlines()
    assert only and all(line.startswith("[sitter] ") for line in only)
    assert not any("Serving HTTP" in line for line in only)
    api = s.api("GET", "/api/services/web-0/logs?tail=200").json()["lines"]
    assert any("Serving HTTP on" in line for line in api)  # the dashboard's log panel
