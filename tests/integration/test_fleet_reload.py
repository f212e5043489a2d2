"""`corral reload` (and SIGHUP) with real processes: only the difference is applied.

One stack, edited step by step: replicas 3 -> 5 adds two, a changed model's args are rolled
under load with no failed request while every other PID stays, 5 -> 2 drains and removes three,
a bad file changes nothing and says why, SIGHUP reloads like the command.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from fleet_load import Load
from launcher_helpers import Stack
from test_fleet_rolling import _free_block

from support import free_port, wait_until

# Whole stacks under load, minutes each: `make test-fleet`, not `make test`.
pytestmark = [pytest.mark.fleet, pytest.mark.timeout(600)]


def _body(chat_port: int, other_port: int, router: int, replicas: int, other_ttft: int) -> str:
    return f"""
[registry]
port = {free_port()}
[router]
port = {router}

[[backend]]
name = "chat"
preset = "mock"
models = ["mock-chat"]
port = {chat_port}
port_step = 2
replicas = {replicas}

[[backend]]
name = "other"
preset = "mock"
models = ["other-model"]
port = {other_port}
args = ["--ttft-ms", "{other_ttft}", "--itl-ms", "5"]
drain_timeout_s = 20
"""


def test_reload_applies_only_the_difference(tmp_path: Path, stacks: list[Stack]) -> None:
    chat_port, other_port, router = _free_block(10), _free_block(2), free_port()
    s = Stack(tmp_path, _body(chat_port, other_port, router, 3, 20))
    stacks.append(s)
    header = s.file.read_text().split("\n[registry]")[0]
    registry_line = s.file.read_text().split("[registry]\n")[1].split("\n")[0]

    def write(replicas: int, other_ttft: int) -> None:
        body = _body(chat_port, other_port, router, replicas, other_ttft)
        body = body.replace(body.split("[registry]\n")[1].split("\n")[0], registry_line, 1)
        s.file.write_text(header + body)

    def pids() -> dict[str, int]:
        return {n: v["pid"] for n, v in s.services().items() if v["pid"]}

    s.up()
    before = pids()

    write(5, 20)
    dry = s.run("reload", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "+ chat-3: start" in dry.stdout and "+ chat-4: start" in dry.stdout, dry.stdout
    assert "chat-3" not in s.services()  # a dry run changes nothing
    r = s.run("reload", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    now = pids()
    assert {n: now[n] for n in before} == before  # nothing else touched
    assert s.services()["chat-4"]["state"] == "healthy"

    # One model's args change under load: rolled (surge copy), no request fails, other PIDs stay.
    load = Load(f"http://127.0.0.1:{router}/v1", "other-model", clients=8).start()
    wait_until(lambda: load.result.ok >= 10, timeout=60, what="load flowing")
    write(5, 30)
    r = s.run("reload", timeout=300)
    result = load.stop()
    assert r.returncode == 0 and "~ other-0: replace" in r.stdout, r.stdout + r.stderr
    assert (result.failed, result.truncated) == (0, 0), result.errors
    after = pids()
    assert after["other-0"] != now["other-0"]
    assert {n: after[n] for n in now if n != "other-0"} == {n: now[n] for n in now if n != "other-0"}

    # 5 -> 2 by SIGHUP: the last three drain and stop; a bad file first changes nothing.
    s.file.write_text(s.file.read_text().replace("replicas = 5", "replicas = 0"))
    bad = s.run("reload")
    assert bad.returncode == 2 and "backend[0].replicas" in bad.stderr and "Traceback" not in bad.stderr
    refused = s.api("POST", "/api/reload")  # the launcher checks too (SIGHUP, other callers)
    assert refused.status_code == 400 and "backend[0].replicas" in refused.json()["error"]["message"]
    assert len([n for n in s.services() if n.startswith("chat-")]) == 5
    write(2, 30)
    gone = [psutil.Process(after[n]) for n in ("chat-2", "chat-3", "chat-4")]
    launcher = s.launcher_pid()
    assert launcher is not None
    os.kill(launcher, signal.SIGHUP)
    wait_until(lambda: sorted(n for n in s.services() if n.startswith("chat-")) == ["chat-0", "chat-1"], 120)
    wait_until(lambda: not any(p.is_running() for p in gone), 60, what="removed replicas exited")
    final = pids()
    assert {n: final[n] for n in ("chat-0", "chat-1", "other-0")} == {
        n: after[n] for n in ("chat-0", "chat-1", "other-0")
    }
