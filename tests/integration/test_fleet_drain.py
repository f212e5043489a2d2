"""Registry ``draining`` against a real `corral registry`: set by a call, kept by heartbeats,
cleared by a new registration, pushed to watchers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from support import CorralProcs, free_port, wait_http


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    procs = CorralProcs()
    port = free_port()
    try:
        procs.start("registry", "--port", str(port))
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/health", timeout=30)
        yield base
    finally:
        procs.close()


def test_draining_is_set_by_a_call_kept_by_heartbeats_and_pushed_to_watchers(registry: str) -> None:
    reg = {"service": "d", "url": "http://127.0.0.1:9", "models": ["m"], "state": "healthy", "id": "d-0"}
    rev = httpx.post(registry + "/v1/instances", json=reg).json()["revision"]
    r = httpx.patch(registry + "/v1/instances/d-0", json={"draining": True})
    assert r.status_code == 200 and r.json()["draining"] is True and r.json()["state"] == "healthy"
    beat = httpx.put(registry + "/v1/instances/d-0/heartbeat", json={"state": "healthy", "metadata": {}})
    assert beat.status_code == 200
    assert httpx.get(registry + "/v1/instances/d-0").json()["draining"] is True  # a heartbeat keeps it
    with httpx.stream("GET", registry + f"/v1/watch?since={rev}", timeout=10) as w:
        for line in w.iter_lines():
            ev = json.loads(line) if line.strip() else {}
            if ev.get("type") == "put" and (ev.get("instance") or {}).get("draining"):
                break
    # A new registration is a new process: back in rotation.
    assert httpx.post(registry + "/v1/instances", json=reg).json()["instance"]["draining"] is False
    assert httpx.patch(registry + "/v1/instances/d-0", json={"draining": "maybe"}).status_code == 422
