"""A running launcher with an ``openai = true`` service (registered with the registry, routed to)
and a GPU backend attributed through a ``CORRAL_GPU_INVENTORY`` file (no GPU needed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from openai import OpenAI

from corral import promtext
from support import free_port, kill_pid_files, kill_tree, wait_until

TOKEN = "fleet-test-token"
GIB = 1 << 30


class Fleet:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        self.dashboard, self.registry, self.router = free_port(), free_port(), free_port()
        self.svc, self.gpu_port = free_port(), free_port()
        self.inv = tmp_path / "gpus.json"
        self.write_inventory([])
        self.file = tmp_path / "corral.toml"
        py = sys.executable
        self.file.write_text(
            f'[corral]\nstate_dir = "{self.state}"\n'
            f'[dashboard]\nport = {self.dashboard}\ntoken = "{TOKEN}"\n'
            f"[registry]\nport = {self.registry}\n"
            f'[router]\nport = {self.router}\npolicy = "round_robin"\n'
            '[[service]]\nname = "oa"\nopenai = true\nreplicas = 2\n'
            # Two ports apart so that two free_port() pairs cannot overlap the replicas.
            f"port = {self.svc}\nport_step = 1\n"
            f'command = ["{py}", "-m", "corral", "mock", "--port", "{{port}}", "--models", "svc-model"]\n'
            'health = "http://127.0.0.1:{port}/health"\n'
            '[[backend]]\nname = "g"\npreset = "mock"\nmodels = ["gpu-model"]\n'
            f"port = {self.gpu_port}\ngpus_per_replica = 1\ngpu_memory_gb = 10\n"
        )
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "CORRAL_GPU_INVENTORY": str(self.inv)}

    def write_inventory(self, processes: list[dict[str, int]]) -> None:
        used = sum(p["used_memory"] for p in processes)
        doc = {
            "gpus": [
                {
                    "index": 0,
                    "name": "H100",
                    "memory_total": 80 * GIB,
                    "memory_used": used,
                    "utilization_percent": 12,
                    "processes": processes,
                }
            ]
        }
        tmp = self.inv.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.inv)  # atomically, as docs/gpu.md asks

    def corral(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "corral", *args, "-c", str(self.file)],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
        )

    def api(self, method: str, path: str) -> httpx.Response:
        return httpx.request(
            method,
            f"http://127.0.0.1:{self.dashboard}{path}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )

    def services(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.api("GET", "/api/services").json()["services"]}

    def instances(self) -> list[dict[str, Any]]:
        r = httpx.get(f"http://127.0.0.1:{self.registry}/v1/instances?service=oa", timeout=10)
        return list(r.json()["data"])

    def sweep(self) -> None:
        kill_pid_files(self.state)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    if (f.state / "launcher.json").exists():
        f.corral("down")
        try:
            kill_tree(int(json.loads((f.state / "launcher.json").read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            pass
    f.sweep()


def test_openai_service_is_routed_and_gpu_backend_is_attributed(fleet: Fleet) -> None:
    r = fleet.corral("up", "-d", "--timeout", "90")
    assert r.returncode == 0, r.stdout + r.stderr

    # The openai service's two replicas are backends in the registry, healthy, with their models.
    urls = {f"http://127.0.0.1:{fleet.svc}", f"http://127.0.0.1:{fleet.svc + 1}"}
    wait_until(
        lambda: (
            {i["url"] for i in fleet.instances() if i["state"] == "healthy" and i["models"] == ["svc-model"]}
            == urls
        ),
        timeout=30,
        what="both oa replicas registered healthy",
    )
    assert all(i["kind"] == "backend" for i in fleet.instances())

    # Requests through the router spread over both replicas.
    client = OpenAI(base_url=f"http://127.0.0.1:{fleet.router}/v1", api_key="x", max_retries=0)
    wait_until(lambda: "svc-model" in {m.id for m in client.models.list()}, timeout=30, what="router model")
    for _ in range(6):
        out = client.chat.completions.create(model="svc-model", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content
    totals = [httpx.get(f"{u}/stats", timeout=10).json()["total"] for u in sorted(urls)]
    assert all(t >= 1 for t in totals) and sum(totals) == 6, totals

    # GPU attribution: the backend's mock (a child of its sitter) holds 4 GiB, a foreign PID 1 GiB.
    sitter = fleet.services()["g-0"]
    assert sitter["gpus"] == [0]
    backend = psutil.Process(sitter["pid"])  # a backend's row shows the backend's own PID
    assert "mock" in " ".join(backend.cmdline()) and backend.ppid() == sitter["sitter"]["pid"]
    fleet.write_inventory(
        [
            {"pid": backend.pid, "used_memory": 4 * GIB},
            {"pid": os.getpid(), "used_memory": 1 * GIB},
        ]
    )
    st = fleet.corral("status", "--json")
    doc = {s["name"]: s for s in json.loads(st.stdout)["services"]}
    assert doc["g-0"]["gpu_memory_bytes"] == 4 * GIB and doc["g-0"]["gpu_usage"] == {"0": 4 * GIB}
    assert doc["oa-0"]["gpu_memory_bytes"] == 0
    table = fleet.corral("status")
    assert "0 (4.0 GiB)" in table.stdout, table.stdout

    cli = json.loads(fleet.corral("gpus", "--json").stdout)  # names from the running launcher
    assert cli["services"]["g-0"]["memory_bytes"] == 4 * GIB

    gpus = fleet.api("GET", "/api/gpus").json()
    holders = {h["pid"]: h for h in gpus["gpus"][0]["holders"]}
    assert holders[backend.pid]["service"] == "g-0" and holders[os.getpid()]["service"] is None
    assert gpus["gpus"][0]["memory_free"] == 75 * GIB and gpus["placed"] == {"g-0": [0]}

    text = fleet.api("GET", "/metrics").text
    metrics = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(metrics['corral_gpu_memory_used_bytes{gpu="0",service="g-0"}']) == 4 * GIB
    assert float(metrics['corral_gpu_memory_used_bytes{gpu="0",service="other"}']) == GIB
    assert float(metrics['corral_gpu_memory_total_bytes{gpu="0"}']) == 80 * GIB
    assert float(metrics['corral_gpu_utilization_percent{gpu="0"}']) == 12
    # The same scrape holds the router's metrics and the sitter's, with its mock engine's, labelled.
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in promtext.parse(text) for s in f.samples
    }
    assert samples[("corral_fleet_scrape_up", (("target", "router"),))] == 1
    assert samples[("corral_fleet_scrape_up", (("target", "g-0"),))] == 1
    assert any(name == "corral_router_requests_total" for name, _ in samples)
    g0 = (("host", socket.gethostname()), ("replica", "0"), ("service", "g"))
    assert samples[("corral_sitter_backend_up", g0)] == 1
    assert samples[("corral_sitter_engine_metrics_up", g0)] == 1
    # The engine's own metrics, re-exposed by its sitter with the sitter's labels added to theirs.
    assert any(n == "vllm:num_requests_running" and set(g0) <= set(labels) for n, labels in samples)

    # Stopping one replica takes it out of the registry; the other stays.
    assert fleet.api("POST", "/api/services/oa-1/stop").status_code == 200
    wait_until(
        lambda: {i["url"] for i in fleet.instances()} == {f"http://127.0.0.1:{fleet.svc}"},
        timeout=30,
        what="oa-1 deregistered",
    )
    assert fleet.corral("down").returncode == 0
