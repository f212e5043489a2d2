"""The sitter's generation probe with real processes: a mock whose /health says 200 while it
cannot generate is taken out (registry + router say why) and restarted when configured; an idle
healthy one is probed, a busy one is not."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from sitter_helpers import instances, sitter_health, start_registry, start_sitter

from support import CorralProcs, free_port, wait_http, wait_until


def probe_file(tmp_path: Path, **kw: object) -> str:
    path = tmp_path / "sitter.toml"
    lines = ["[generation_probe]"] + [
        f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in kw.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_hung_generation_goes_out_of_rotation_with_reason_then_restarts(
    procs: CorralProcs, tmp_path: Path
) -> None:
    registry, _ = start_registry(procs, tmp_path)
    rport = free_port()
    procs.start("router", "--port", str(rport), "--registry-url", registry, log=tmp_path / "router.log")
    router = f"http://127.0.0.1:{rport}"
    wait_http(router + "/health", timeout=30)
    port = free_port()
    conf = probe_file(tmp_path, enabled=True, interval_s=0.3, timeout_s=0.5, failures=2, restart_after=4)
    start_sitter(
        procs,
        tmp_path,
        port,
        "--registry-url",
        registry,
        "--args",
        "--hang-generation-after 0",
        "--config-file",
        conf,
    )
    with httpx.Client() as c:
        backend = wait_until(
            lambda: (
                (i := instances(c, registry).get("backend", {})).get("metadata", {}).get("out_reason")
                == "generation_probe_failed"
                and i
            ),
            60,
            interval=0.05,
            what="registry: out because the generation probe failed",
        )
        assert backend["state"] == "unhealthy"
        # /health of the backend still says 200: only generation tells.
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        workers = httpx.get(router + "/workers", timeout=5).json()["workers"]
        assert any(w["out_reason"] == "generation_probe_failed" for w in workers) or wait_until(
            lambda: any(
                w["out_reason"] == "generation_probe_failed"
                for w in httpx.get(router + "/workers", timeout=5).json()["workers"]
            ),
            30,
            interval=0.05,
            what="router: out_reason",
        )
    # restart_after = 4: the sitter restarts the backend (a fresh engine might generate).
    pid = sitter_health(port)["pid"]
    h = wait_until(
        lambda: (h := sitter_health(port))["generation_probe"]["restarts"] >= 1 and h["pid"] != pid and h,
        60,
        what="restart by the probe",
    )
    assert h["generation_probe"]["probes"] >= 4


def test_idle_backend_is_probed_busy_one_is_not(procs: CorralProcs, tmp_path: Path) -> None:
    port = free_port()
    conf = probe_file(tmp_path, enabled=True, interval_s=0.4)
    start_sitter(procs, tmp_path, port, "--config-file", conf)
    gp = wait_until(
        lambda: (g := sitter_health(port)["generation_probe"])["probes"] >= 2 and g, 60, what="idle probes"
    )
    assert gp["out"] is False and gp["last_ok"] is True
    # Traffic during every interval: the backend's finished-request counter moves, no probe is sent.
    base = f"http://127.0.0.1:{port}"
    with httpx.Client() as c:
        deadline = time.monotonic() + 30
        while sitter_health(port)["generation_probe"]["skipped_busy"] < 2 and time.monotonic() < deadline:
            c.post(base + "/v1/completions", json={"model": "m1", "prompt": "x", "max_tokens": 2})
            time.sleep(0.05)
    assert sitter_health(port)["generation_probe"]["skipped_busy"] >= 2
