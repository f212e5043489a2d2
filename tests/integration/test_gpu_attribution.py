"""Attribution through a real process tree, and what is built on it: refusals, metrics, `corral gpus`.

The GPU side comes from an inventory file naming real PIDs: a child and a grandchild spawned with
``python -c``, and this test process as the foreign holder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from corral.gpu import ENV_VAR, PlacementError, attribute, place, read_inventory
from corral.gpu.metrics import register_gpu_metrics
from support import two_level_tree

GIB = 1 << 30


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    """(child PID, grandchild PID): a real two-level tree in its own session."""
    with two_level_tree() as pids:
        yield pids


@pytest.fixture
def inventory_file(tmp_path: Path, tree: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> Path:
    """GPU 0: the grandchild 30 GiB + this (foreign) process 20 GiB; GPU 1: the child 2 GiB; GPU 2 idle."""
    child, grandchild = tree
    f = tmp_path / "gpus.json"
    doc: dict[str, Any] = {
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H100",
                "memory_total": 62 * GIB,
                "utilization_percent": 90,
                "processes": [
                    {"pid": grandchild, "used_memory": 30 * GIB},
                    {"pid": os.getpid(), "used_memory": 20 * GIB},
                ],
            },
            {"index": 1, "name": "NVIDIA H100", "memory_total": 80 * GIB,
             "processes": [{"pid": child, "used_memory": 2 * GIB}]},
            {"index": 2, "name": "NVIDIA H100", "memory_total": 80 * GIB, "memory_used": 0},
        ]
    }  # fmt: skip
    f.write_text(json.dumps(doc))
    monkeypatch.setenv(ENV_VAR, str(f))
    return f


def test_gpu_pids_are_mapped_to_the_service_owning_their_tree(
    inventory_file: Path, tree: tuple[int, int]
) -> None:
    child, grandchild = tree
    att = attribute(read_inventory(), {"chat-0": child, "idle": [999_999_999]})
    chat = att.services["chat-0"]
    assert chat.gpus == [0, 1]
    assert chat.memory_bytes == 32 * GIB and chat.memory_by_gpu == {0: 30 * GIB, 1: 2 * GIB}
    assert sorted(chat.pids) == sorted([child, grandchild])
    assert att.services["idle"].gpus == [] and att.services["idle"].memory_bytes == 0
    g0 = att.gpu(0)
    assert g0 is not None and (g0.memory_used, g0.memory_free, g0.utilization_percent) == (
        50 * GIB,
        12 * GIB,
        90,
    )
    mine, foreign = g0.holders
    assert (mine.pid, mine.service, mine.used_memory) == (grandchild, "chat-0", 30 * GIB)
    assert "-c import time" in mine.command
    assert (foreign.pid, foreign.service) == (os.getpid(), None)
    assert "pytest" in foreign.command  # a foreign holder is named by its command line


def test_refusal_names_the_service_and_the_foreign_command(
    inventory_file: Path, tree: tuple[int, int]
) -> None:
    att = attribute(read_inventory(), {"chat-0": tree[0]})
    with pytest.raises(PlacementError) as err:
        place(1, 1, read_inventory(), explicit=[[0]], gpu_memory_gb=40, holders=att)
    line = str(err.value).splitlines()[1].strip()
    assert line.startswith(
        "GPU 0 (NVIDIA H100): 12.0 GiB free, 40.0 GiB needed; "
        f"held by service chat-0 (30.0 GiB), PID {os.getpid()} "
    )
    assert line.endswith("(20.0 GiB)") and "pytest" in line
    # With the memory there, the freest GPUs are taken.
    assert place(2, 1, read_inventory(), gpu_memory_gb=40, holders=att) == [[2], [1]]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics_export_memory_per_gpu_and_service(inventory_file: Path, tree: tuple[int, int]) -> None:
    registry = CollectorRegistry()
    register_gpu_metrics(registry, services=lambda: {"chat-0": tree[0]})
    s = _samples(generate_latest(registry).decode())
    assert s[("corral_gpu_memory_used_bytes", (("gpu", "0"), ("service", "chat-0")))] == 30 * GIB
    assert s[("corral_gpu_memory_used_bytes", (("gpu", "0"), ("service", "other")))] == 20 * GIB
    assert s[("corral_gpu_memory_used_bytes", (("gpu", "1"), ("service", "chat-0")))] == 2 * GIB
    assert s[("corral_gpu_memory_free_bytes", (("gpu", "0"),))] == 12 * GIB
    assert s[("corral_gpu_memory_total_bytes", (("gpu", "2"),))] == 80 * GIB
    assert s[("corral_gpu_utilization_percent", (("gpu", "0"),))] == 90
    assert ("corral_gpu_utilization_percent", (("gpu", "1"),)) not in s  # unknown is absent, not 0


def _corral(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_corral_gpus_json(inventory_file: Path, tree: tuple[int, int]) -> None:
    r = _corral("gpus", "--json", "--service", f"chat-0={tree[0]}", env={ENV_VAR: str(inventory_file)})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["source"] == f"file:{inventory_file}" and doc["message"] is None
    assert [g["index"] for g in doc["gpus"]] == [0, 1, 2]
    assert doc["gpus"][0]["memory_free"] == 12 * GIB
    holders = [(h["pid"], h["service"]) for h in doc["gpus"][0]["holders"]]
    assert holders == [(tree[1], "chat-0"), (os.getpid(), None)]
    assert doc["services"]["chat-0"]["memory_bytes"] == 32 * GIB


def test_corral_gpus_table(inventory_file: Path, tree: tuple[int, int]) -> None:
    r = _corral(
        "gpus", "--service", f"chat-0={tree[0]}", env={ENV_VAR: str(inventory_file), "COLUMNS": "200"}
    )
    assert r.returncode == 0, r.stderr
    assert "service chat-0 (30.0 GiB)" in r.stdout and f"PID {os.getpid()}" in r.stdout
    assert "NVIDIA H100" in r.stdout and "12.0 GiB" in r.stdout


def test_corral_gpus_without_gpus_prints_the_message(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    r = _corral("gpus", env={ENV_VAR: str(missing)})
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.strip() == f"GPU inventory file {missing}: No such file or directory"
    r = _corral("gpus", "--json", env={ENV_VAR: str(missing)})
    assert json.loads(r.stdout)["gpus"] == []
    r = _corral("gpus", "--service", "oops", env={ENV_VAR: str(missing)})
    assert r.returncode == 2 and r.stderr.strip() == "error: --service 'oops': expected NAME=PID"
    assert "Traceback" not in r.stderr
