"""`corral config check` shows the engine command each sitter will run (shell-quoted, as pasted
into a shell it runs the same argv), warns when --tensor-parallel-size disagrees with the GPUs a
replica gets, and exits non-zero when a replica will fail GPU placement."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

GIB = 1 << 30


def _check(tmp_path: Path, body: str, free_gib: list[float]) -> subprocess.CompletedProcess[str]:
    gpus = [
        {"index": i, "name": "H100", "memory_total": 80 * GIB, "memory_used": int((80 - f) * GIB)}
        for i, f in enumerate(free_gib)
    ]
    (tmp_path / "gpus.json").write_text(json.dumps({"gpus": gpus}))
    cfg = tmp_path / "corral.toml"
    cfg.write_text(f'[corral]\nstate_dir = "{tmp_path / "state"}"\n' + body)
    env = {**os.environ, "CORRAL_GPU_INVENTORY": str(tmp_path / "gpus.json"), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-m", "corral", "config", "check", "-c", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_prints_the_quoted_engine_command_and_warns_on_tensor_parallel(tmp_path: Path) -> None:
    body = (
        '[[backend]]\nname = "qwen"\npreset = "vllm"\nmodel = "/models/Qwen 7B\'s"\nport = 8200\n'
        'models = ["qwen-7b"]\ngpus_per_replica = 1\n'
        'args = ["--tensor-parallel-size", "2", "--chat-template", "{% if x %}a b{% endif %}"]\n'
    )
    r = _check(tmp_path, body, [80, 80])
    assert r.returncode == 0, r.stdout + r.stderr  # a warning, not an error
    runs = next(ln for ln in r.stdout.splitlines() if ln.startswith("  runs: "))
    argv = shlex.split(runs.removeprefix("  runs: "))
    assert argv[0].startswith("CUDA_VISIBLE_DEVICES=")
    assert argv[1:] == [
        "vllm", "serve", "/models/Qwen 7B's", "--host", "127.0.0.1", "--port", "8200",
        "--served-model-name", "qwen-7b", "--tensor-parallel-size", "2", "--chat-template",
        "{% if x %}a b{% endif %}",
    ]  # fmt: skip
    warning = " ".join(r.stdout.split())
    assert "warning: qwen-0: backend[0].args asks for tensor parallel size 2" in warning
    assert "gives it 1 GPU(s)" in warning


def test_exits_non_zero_when_a_replica_will_fail_gpu_placement(tmp_path: Path) -> None:
    body = (
        '[[backend]]\nname = "big"\npreset = "mock"\nmodels = ["m"]\nport = 8300\nreplicas = 2\n'
        "gpus_per_replica = 1\ngpu_memory_gb = 40\n"
    )
    r = _check(tmp_path, body, [70, 10])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 replica(s) will fail GPU placement" in r.stderr and "big-1 will fail" in r.stdout
