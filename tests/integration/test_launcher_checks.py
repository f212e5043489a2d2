"""`corral up -d` catches what used to pass: a probe-less service that dies right after spawn
(``settle_s``), and a replica whose GPU placement was refused while the rest of the fleet runs."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
from launcher_helpers import Stack

from support import alive, free_port, wait_until

GIB = 1 << 30
NO_REGISTRY = "[registry]\nenabled = false\n[router]\nenabled = false\n"


def test_probeless_service_dying_after_spawn_fails_up(tmp_path: Path, stacks: list[Stack]) -> None:
    crash = "import sys, time; print('error: unknown flag --frobnicate', flush=True); "
    crash += "time.sleep(0.2); sys.exit(2)"
    body = NO_REGISTRY + (
        f'[[service]]\nname = "crashy"\ncommand = ["{{py}}", "-c", "{crash}"]\n'
        'restart = { policy = "on-failure", max_restarts = 1, backoff_initial_s = 0.05 }\n'
        "settle_s = 3\n"  # far above the child's start-up + 0.2 s, even on a loaded machine
    )
    s = Stack(tmp_path, body)
    stacks.append(s)
    r = s.run("up", "-d", "--timeout", "30")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "crashy failed" in r.stderr and "before settle_s=3s (failed start)" in r.stderr
    assert "crash loop" in r.stderr
    assert "last log lines" in r.stderr and "unknown flag --frobnicate" in r.stderr
    assert "Traceback" not in r.stderr


def test_probeless_service_is_healthy_only_after_settle_s(tmp_path: Path, stacks: list[Stack]) -> None:
    body = NO_REGISTRY + (
        '[[service]]\nname = "calm"\ncommand = ["{py}", "-c", "import time; time.sleep(600)"]\n'
        "settle_s = 0.6\n"
        '[[service]]\nname = "after"\ncommand = ["{py}", "-c", "import time; time.sleep(600)"]\n'
        'settle_s = 0\ndepends_on = ["calm"]\n'
    )
    s = Stack(tmp_path, body)
    stacks.append(s)
    r = s.run("up", "-d", "--timeout", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    events = s.events({("calm", "healthy"), ("after", "healthy")})
    calm = [(e["state"], e["at"]) for e in events if e["name"] == "calm"]
    spawned = next(at for state, at in calm if state == "starting")
    healthy = next(at for state, at in calm if state == "healthy")
    assert [state for state, _ in calm] == ["starting", "healthy"]
    assert healthy - spawned >= 0.55
    after_spawned = next(
        e["at"]
        for e in events
        if e["name"] == "after" and e["state"] == "starting" and e["reason"] == "spawned"
    )
    assert after_spawned >= healthy  # depends_on "healthy" waited for the settle time


def test_gpu_placement_refusal_fails_one_replica_and_the_rest_runs(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    inventory = tmp_path / "gpus.json"
    gpu = {"index": 0, "name": "H100", "memory_total": 80 * GIB, "memory_used": 70 * GIB, "processes": []}
    inventory.write_text(json.dumps({"gpus": [gpu]}))
    body = NO_REGISTRY + (
        f'[[backend]]\nname = "big"\npreset = "mock"\nmodels = ["big-model"]\nport = {free_port()}\n'
        "gpus_per_replica = 1\ngpu_memory_gb = 40\n"
        f'[[backend]]\nname = "small"\npreset = "mock"\nmodels = ["small-model"]\nport = {free_port()}\n'
    )
    s = Stack(tmp_path, body, env={"CORRAL_GPU_INVENTORY": str(inventory)})
    stacks.append(s)
    r = s.run("up", "-d", "--timeout", "30")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "big-0 failed" in r.stderr and "GPU 0 (H100): 10.0 GiB free, 40.0 GiB needed" in r.stderr
    assert "Traceback" not in r.stderr

    # `up -d` stops waiting at the first failure; the other backend keeps starting.
    wait_until(lambda: s.services()["small-0"]["state"] == "healthy", timeout=30, what="small-0 healthy")
    status = s.run("status", "--json")
    assert status.returncode == 1  # something that should run is not healthy
    svc = {x["name"]: x for x in json.loads(status.stdout)["services"]}
    assert svc["big-0"]["state"] == "failed" and svc["big-0"]["pid"] is None
    assert "10.0 GiB free, 40.0 GiB needed" in svc["big-0"]["reason"]
    assert svc["small-0"]["state"] == "healthy" and svc["small-0"]["pid"]

    root = psutil.Process(svc["small-0"]["sitter"]["pid"])  # the sitter; its backend is a child
    launcher = s.launcher_pid()
    assert launcher is not None
    procs = [root, *root.children(recursive=True), psutil.Process(launcher)]
    down = s.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert alive(procs) == []
    assert not (s.state / "launcher.json").exists() and not list(s.state.rglob("*.pid"))


def test_status_logs_and_down_work_after_the_gpus_are_gone(tmp_path: Path, stacks: list[Stack]) -> None:
    inventory = tmp_path / "gpus.json"
    gpu = {"index": 0, "name": "H100", "memory_total": 80 * GIB, "memory_used": 0, "processes": []}
    inventory.write_text(json.dumps({"gpus": [gpu]}))
    body = NO_REGISTRY + (
        f'[[backend]]\nname = "llm"\npreset = "mock"\nmodels = ["m"]\nport = {free_port()}\n'
        "gpus_per_replica = 1\n"
    )
    s = Stack(tmp_path, body, env={"CORRAL_GPU_INVENTORY": str(inventory)})
    stacks.append(s)
    s.up()
    sitter = psutil.Process(s.services()["llm-0"]["sitter"]["pid"])
    launcher = s.launcher_pid()
    assert launcher is not None
    procs = [sitter, *sitter.children(recursive=True), psutil.Process(launcher)]
    # The driver fell over: no GPU is visible any more. The file can no longer be placed...
    inventory.write_text(json.dumps({"gpus": []}))
    check = s.run("config", "check")
    assert check.returncode == 2 and "backend[0].gpus_per_replica" in check.stderr
    # ...but every command that only talks to the running launcher still works.
    status = s.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["services"][0]["state"] == "healthy"
    assert s.run("logs", "llm-0", "-n", "5").returncode == 0
    down = s.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert alive(procs) == []
