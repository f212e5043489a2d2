"""`corral up` with real processes: dependency order, adoption after SIGKILL, failures, down.

Each test writes a config on free ports into tmp_path and always tears everything down (corral
down, then a SIGKILL sweep of whatever the pid files still name).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest
from launcher_helpers import Stack, corral

from support import alive, free_port, wait_until

HTTP_SERVER = '["{py}", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]'


def services_config() -> str:
    a, b, c = free_port(), free_port(), free_port()
    b2 = free_port()
    step = abs(b2 - b) or 1
    b = min(b, b2)
    return f"""
[registry]
enabled = false
[router]
enabled = false

[[service]]
name = "a"
command = {HTTP_SERVER}
port = {a}
health = "http://{{host}}:{{port}}/"

[[service]]
name = "b"
command = {HTTP_SERVER}
port = {b}
replicas = 2
port_step = {step}
health = "tcp://{{host}}:{{port}}"
depends_on = ["a"]

[[service]]
name = "c"
command = {HTTP_SERVER}
port = {c}
health = "http://{{host}}:{{port}}/"
depends_on = [{{ name = "b", condition = "started" }}]
group = "tail"
"""


def test_services_start_in_dependency_order_and_down_leaves_no_process(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    s = Stack(tmp_path, services_config())
    stacks.append(s)
    out = s.up().stdout
    assert "corral is up: 4 process(es) healthy" in out

    events = s.events({("a", "healthy"), ("b-0", "healthy"), ("b-1", "healthy"), ("c", "healthy")})
    spawned = {e["name"]: e["at"] for e in events if e["state"] == "starting" and e["reason"] == "spawned"}
    healthy = {e["name"]: e["at"] for e in events if e["state"] == "healthy"}
    assert healthy["a"] <= spawned["b-0"] and healthy["a"] <= spawned["b-1"]
    assert max(spawned["b-0"], spawned["b-1"]) <= spawned["c"]

    status = s.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    doc = json.loads(status.stdout)
    svc = {x["name"]: x for x in doc["services"]}
    assert set(svc) == {"a", "b-0", "b-1", "c"}
    for key in ("name", "kind", "group", "state", "pid", "ports", "url", "uptime_s", "restarts", "last_exit"):
        assert key in svc["c"]
    for key in ("reason", "cpu_percent", "rss_bytes", "children", "models", "gpus", "depends_on"):
        assert key in svc["c"]
    assert svc["c"]["group"] == "tail" and svc["b-1"]["group"] == "b"
    assert svc["c"]["depends_on"] == [
        {"name": "b-0", "condition": "started"},
        {"name": "b-1", "condition": "started"},
    ]
    assert all(x["state"] == "healthy" and x["pid"] for x in svc.values())

    procs = s.tree_pids()
    launcher = psutil.Process(s.launcher_pid())
    down = s.run("down")
    assert down.returncode == 0, down.stderr
    assert alive([*procs, launcher]) == []
    assert not (s.state / "launcher.json").exists()
    assert s.run("status").returncode == 1


def test_launcher_sigkill_then_up_adopts_without_a_second_copy(tmp_path: Path, stacks: list[Stack]) -> None:
    s = Stack(tmp_path, services_config())
    stacks.append(s)
    s.up()
    before = {n: x["pid"] for n, x in s.services().items()}
    os.kill(s.launcher_pid(), signal.SIGKILL)
    wait_until(lambda: s.run("status").returncode == 1, what="launcher gone")
    s.up()
    after = s.services()
    assert {n: x["pid"] for n, x in after.items()} == before
    assert all(x["adopted"] and x["state"] == "healthy" for x in after.values())
    again = s.run("up", "-d")
    assert again.returncode == 0 and "already running" in again.stdout


def test_control_api_needs_the_token_and_acts_on_services_and_groups(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    s = Stack(tmp_path, services_config())
    stacks.append(s)
    s.up()
    r = httpx.get(f"http://127.0.0.1:{s.dashboard}/api/services", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert s.api("GET", "/api/services/nope").status_code == 404
    assert "/api/services/{name}/{action}" in s.api("GET", "/openapi.json").json()["paths"]

    old = s.services()["c"]["pid"]
    stopped = s.api("POST", "/api/groups/tail/stop").json()
    assert [x["state"] for x in stopped["services"]] == ["stopped"]
    assert s.run("status").returncode == 1  # c should run but does not
    assert s.run("start", "tail").returncode == 0
    wait_until(lambda: s.services()["c"]["state"] == "healthy", timeout=30, what="c healthy again")
    assert s.services()["c"]["pid"] != old

    r = s.run("restart", "a")
    assert r.returncode == 0 and "a:" in r.stdout
    logs = s.api("GET", "/api/services/a/logs?tail=50").json()["lines"]
    assert any("[corral] started pid" in line for line in logs)
    cli_logs = s.run("logs", "a", "--tail", "5")
    assert cli_logs.returncode == 0 and cli_logs.stdout.strip()


def test_a_failing_service_makes_up_fail_with_its_reason(tmp_path: Path, stacks: list[Stack]) -> None:
    body = f"""
[registry]
enabled = false
[router]
enabled = false
[[service]]
name = "broken"
health = "tcp://127.0.0.1:{free_port()}"
command = ["{{py}}", "-c", "import sys; print('boom: missing settings file', flush=True); sys.exit(3)"]
restart = {{ policy = "on-failure", max_restarts = 1, backoff_initial_s = 0.05 }}
"""
    s = Stack(tmp_path, body)
    stacks.append(s)
    r = s.run("up", "-d", "--timeout", "120")
    assert r.returncode == 1
    assert "broken failed" in r.stderr and "boom: missing settings file" in r.stderr


def test_config_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "corral.toml"
    f.write_text('[[service]]\nname = "a"\ncommand = ["x"]\nport = 70000\n')
    r = corral("config", "check", "-c", str(f))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "service[0].port" in r.stderr
    r = corral("up", "-c", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_whole_stack_up_answers_through_the_router_and_down_stops_every_tree(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    import openai

    p1, p2 = sorted((free_port(), free_port()))
    body = f"""
[registry]
port = {free_port()}
[router]
port = {free_port()}

[[backend]]
name = "chat"
preset = "mock"
models = ["mock-chat"]
port = {p1}
replicas = 2
port_step = {p2 - p1}
"""
    s = Stack(tmp_path, body)
    stacks.append(s)
    out = s.up().stdout
    assert "corral is up: 4 process(es) healthy" in out
    router_url = out.split("router", 1)[1].split()[0]
    client = openai.OpenAI(base_url=router_url, api_key="none", max_retries=0)
    wait_until(lambda: [m.id for m in client.models.list()] == ["mock-chat"], timeout=30, what="model routed")
    reply = client.chat.completions.create(model="mock-chat", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content

    view = s.api("GET", "/api/router")
    assert view.status_code == 200, view.text
    assert "mock-chat" in [m["name"] for m in view.json()["models"]]
    procs = s.tree_pids()
    assert len(procs) >= 6  # registry, router, 2 sitters and their 2 mock backends
    launcher = psutil.Process(s.launcher_pid())
    assert s.run("down").returncode == 0
    assert alive([*procs, launcher]) == []
