"""GPU placement in the plan against a live inventory (``CORRAL_GPU_INVENTORY`` files, no GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral.config import load_plan
from corral.errors import ConfigError

GIB = 1 << 30


def inventory(tmp_path: Path, used_gib: list[float], holders: dict[int, int] | None = None) -> Path:
    gpus = []
    for i, used in enumerate(used_gib):
        g: dict[str, object] = {
            "index": i,
            "name": "H100",
            "memory_total": 80 * GIB,
            "memory_used": int(used * GIB),
        }
        if holders and i in holders:
            g["processes"] = [{"pid": holders[i], "used_memory": int(used * GIB)}]
        gpus.append(g)
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps({"gpus": gpus}))
    return path


def config(tmp_path: Path, body: str, head: str = "") -> str:
    path = tmp_path / "corral.toml"
    path.write_text(f'[corral]\nstate_dir = "{tmp_path / "state"}"\n{head}' + body)
    return str(path)


BACKEND = '[[backend]]\nname = "b"\npreset = "mock"\nmodels = ["m"]\nport = 28100\n'


@pytest.fixture
def inv_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    def use(used_gib: list[float], holders: dict[int, int] | None = None) -> Path:
        path = inventory(tmp_path, used_gib, holders)
        monkeypatch.setenv("CORRAL_GPU_INVENTORY", str(path))
        return path

    return use


def test_placement_takes_the_gpus_with_most_free_memory(tmp_path: Path, inv_env) -> None:  # type: ignore[no-untyped-def]
    inv_env([70, 10, 0, 40])
    plan = load_plan(config(tmp_path, BACKEND + "replicas = 2\ngpus_per_replica = 1\ngpu_memory_gb = 20\n"))
    b0, b1 = plan.get("b-0"), plan.get("b-1")
    assert b0 and b1
    assert (b0.gpus, b1.gpus) == ([2], [1])
    assert b0.env["CUDA_VISIBLE_DEVICES"] == "2" and b0.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert b0.sitter and b0.sitter.gpus == [2] and not b0.gpu_error
    assert plan.gpu_free == {0: 10 * GIB, 1: 70 * GIB, 2: 80 * GIB, 3: 40 * GIB}


def test_corral_gpus_restricts_the_candidates(tmp_path: Path, inv_env) -> None:  # type: ignore[no-untyped-def]
    inv_env([70, 10, 0, 40])
    plan = load_plan(config(tmp_path, BACKEND + "gpus_per_replica = 1\n", head="gpus = [0, 3]\n"))
    assert plan.get("b-0").gpus == [3]  # type: ignore[union-attr]


def test_refusal_fails_only_the_replica_that_does_not_fit(tmp_path: Path, inv_env) -> None:  # type: ignore[no-untyped-def]
    inv_env([75, 0], holders={0: os.getpid()})
    body = BACKEND + "replicas = 2\ngpus_per_replica = 1\ngpu_memory_gb = 40\n"
    body += '[[service]]\nname = "web"\ncommand = ["sleep", "1"]\n'
    plan = load_plan(config(tmp_path, body))
    b0, b1 = plan.get("b-0"), plan.get("b-1")
    assert b0 and b1 and b0.gpus == [1] and not b0.gpu_error
    assert b1.gpus == [] and b1.gpu_error
    assert "GPU 0 (H100): 5.0 GiB free, 40.0 GiB needed" in b1.gpu_error
    assert f"PID {os.getpid()}" in b1.gpu_error and "75.0 GiB" in b1.gpu_error
    assert plan.get("web") is not None and not plan.get("web").gpu_error  # type: ignore[union-attr]


def test_explicit_lists_win_and_memory_is_checked(tmp_path: Path, inv_env) -> None:  # type: ignore[no-untyped-def]
    inv_env([0, 0, 70])
    plan = load_plan(config(tmp_path, BACKEND + "replicas = 2\ngpus = [[2], [0, 1]]\ngpu_memory_gb = 20\n"))
    b0, b1 = plan.get("b-0"), plan.get("b-1")
    assert b0 and b1 and b1.gpus == [0, 1] and not b1.gpu_error
    assert b0.gpu_error and "GPU 2 (H100): 10.0 GiB free, 20.0 GiB needed" in b0.gpu_error
    with pytest.raises(ConfigError) as err:
        load_plan(config(tmp_path, BACKEND + "replicas = 2\ngpus = [[1], [1]]\n"))
    assert "backend[0].gpus" in str(err.value) and "share_gpus" in str(err.value)
    with pytest.raises(ConfigError, match="GPU 7 does not exist"):
        load_plan(config(tmp_path, BACKEND + "gpus = [[7]]\n"))


def test_sharing_spreads_then_stacks_by_memory(tmp_path: Path, inv_env) -> None:  # type: ignore[no-untyped-def]
    inv_env([0, 0])
    body = BACKEND + "replicas = 4\ngpus_per_replica = 1\nshare_gpus = true\ngpu_memory_gb = 30\n"
    plan = load_plan(config(tmp_path, body))
    got = [plan.get(f"b-{i}").gpus for i in range(4)]  # type: ignore[union-attr]
    assert sorted(g[0] for g in got) == [0, 0, 1, 1] and got[0] != got[1]
    with pytest.raises(ConfigError, match="need 3 free GPUs but only 2"):
        load_plan(config(tmp_path, BACKEND + "replicas = 3\ngpus_per_replica = 1\n"))


def test_config_check_prints_the_plan_against_the_inventory(tmp_path: Path) -> None:
    inv = inventory(tmp_path, [70, 10])
    body = BACKEND + "replicas = 2\ngpus_per_replica = 1\ngpu_memory_gb = 40\ngpu_release_timeout_s = 30\n"
    env = {**os.environ, "CORRAL_GPU_INVENTORY": str(inv), "COLUMNS": "250"}
    r = subprocess.run(
        [sys.executable, "-m", "corral", "config", "check", "-c", config(tmp_path, body)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr  # a replica will fail placement: `config check` says no
    assert "1 replica(s) will fail GPU placement" in r.stderr
    assert "1 (70.0 GiB free)" in r.stdout and "refused" in r.stdout
    assert "b-1 will fail" in r.stdout and "10.0 GiB free, 40.0 GiB needed" in r.stdout
    assert "--gpu-release-timeout 30.0" in r.stdout
