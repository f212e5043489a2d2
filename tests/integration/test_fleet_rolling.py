"""`corral restart --rolling` with real processes: replicas are drained, restarted and routed
again one at a time while clients (half streaming) keep going, and no request fails."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import psutil
import pytest
from fleet_load import Load
from launcher_helpers import Stack

from support import free_port, wait_until

MOCK_ARGS = '["--ttft-ms", "30", "--itl-ms", "10"]'

# Whole stacks under load, minutes each: `make test-fleet`, not `make test`.
pytestmark = [pytest.mark.fleet, pytest.mark.timeout(600)]


def _free_block(n: int) -> int:
    """A port p with p .. p + n - 1 all free now (replicas and their sitters, step 2), below the
    kernel's ephemeral range: a replica added later (reload) must not find its port taken by
    some client connection's local port meanwhile."""
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(200):
        p = random.randrange(10000, max(10001, low - n))
        socks = []
        try:
            for q in range(p, p + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


def _stack(tmp_path: Path, replicas: int, extra: str = "") -> tuple[Stack, str]:
    router = free_port()
    first = _free_block(2 * replicas)
    body = f"""
[registry]
port = {free_port()}
[router]
port = {router}

[[backend]]
name = "chat"
preset = "mock"
models = ["mock-chat"]
port = {first}
port_step = 2
replicas = {replicas}
args = {MOCK_ARGS}
drain_timeout_s = 20
{extra}
"""
    return Stack(tmp_path, body), f"http://127.0.0.1:{router}/v1"


def _routed(s: Stack, n: int) -> bool:
    r = s.api("GET", "/api/router")
    return (
        r.status_code == 200
        and sum(
            len(m.get("instances", [])) for m in r.json().get("models", []) if m.get("name") == "mock-chat"
        )
        >= n
    )


def test_rolling_restart_of_three_replicas_fails_no_request(tmp_path: Path, stacks: list[Stack]) -> None:
    s, base = _stack(tmp_path, 3)
    stacks.append(s)
    s.up()
    before = {n: v["pid"] for n, v in s.services().items() if n.startswith("chat-")}
    load = Load(base, "mock-chat", clients=8).start()
    wait_until(lambda: load.result.ok >= 20, timeout=60, what="load flowing")
    r = s.run("restart", "--rolling", "chat", timeout=300)
    result = load.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("restarted in") == 3, r.stdout
    assert (result.failed, result.truncated) == (0, 0), result.errors
    assert result.ok > 20
    after = {n: v["pid"] for n, v in s.services().items() if n.startswith("chat-")}
    assert all(after[n] != before[n] and psutil.pid_exists(after[n]) for n in before), (before, after)


def test_single_replica_gets_a_surge_copy_and_a_plain_service_needs_force(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    web = f"""
[[service]]
name = "web"
command = ["{{py}}", "-m", "http.server", "{{port}}", "--bind", "127.0.0.1"]
port = {free_port()}
health = "http://{{host}}:{{port}}/"
"""
    s, base = _stack(tmp_path, 1, web)
    stacks.append(s)
    s.up()
    wait_until(lambda: _routed(s, 1), timeout=60, what="chat routed")
    load = Load(base, "mock-chat", clients=4).start()
    wait_until(lambda: load.result.ok >= 10, timeout=60, what="load flowing")
    r = s.run("restart", "--rolling", "chat", timeout=300)
    result = load.stop()
    assert r.returncode == 0 and "surge chat-0-surge" in r.stdout, r.stdout + r.stderr
    assert (result.failed, result.truncated) == (0, 0), result.errors
    assert not any("surge" in n for n in s.services())
    refused = s.api("POST", "/api/rolling/web")
    assert refused.status_code == 409 and "--force" in refused.json()["error"]["message"]
    pid = s.services()["web"]["pid"]
    forced = s.api("POST", "/api/rolling/web?force=true")
    assert forced.status_code == 200, forced.text
    assert s.services()["web"]["pid"] != pid and s.services()["web"]["state"] == "healthy"
