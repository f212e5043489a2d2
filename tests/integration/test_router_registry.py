"""Discovery through a real `corral registry`: pushed instances, removal, registry loss."""

from __future__ import annotations

import os
import signal

import httpx
import openai
from test_router_support import start_mock

from support import CorralProcs, free_port, wait_http, wait_until

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}


def _models(router: str) -> list[str]:
    return [m["id"] for m in httpx.get(router + "/v1/models").json()["data"]]


def test_router_follows_the_registry_and_survives_its_loss(procs: CorralProcs) -> None:
    reg_port = free_port()
    reg_proc = procs.start("registry", "--port", str(reg_port))
    registry = f"http://127.0.0.1:{reg_port}"
    wait_http(registry + "/health", timeout=30)
    mock = start_mock(procs, "m1")
    port = free_port()
    procs.start("router", "--port", str(port), "--registry-url", registry)
    router = f"http://127.0.0.1:{port}"
    wait_http(router + "/health", timeout=30)
    assert _models(router) == []

    doc = {"service": "chat", "url": mock, "models": ["m1"], "state": "healthy", "metadata": {}}
    r = httpx.post(registry + "/v1/instances", json=doc)
    assert r.status_code in (200, 201), r.text
    iid = r.json()["id"]
    wait_until(lambda: _models(router) == ["m1"], 10, what="pushed instance")
    c = openai.OpenAI(base_url=router + "/v1", api_key="x", max_retries=0)
    assert c.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]

    # Registry gone: keep routing on the last view.
    os.killpg(reg_proc.pid, signal.SIGKILL)
    reg_proc.wait()
    assert c.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]

    # Registry back (empty, in-memory): the new snapshot replaces the view.
    procs.start("registry", "--port", str(reg_port))
    wait_http(registry + "/health", timeout=30)
    wait_until(lambda: _models(router) == [], 20, what="view replaced by the new registry's snapshot")
    r = httpx.post(registry + "/v1/instances", json=doc)
    iid = r.json()["id"]
    wait_until(lambda: _models(router) == ["m1"], 20, what="re-registered instance")
    assert httpx.delete(f"{registry}/v1/instances/{iid}").status_code in (200, 204)
    wait_until(lambda: _models(router) == [], 10, what="deleted instance leaves rotation")

    # Known a moment ago, no instance now: 503 at once (retry later), not 404; unknown stays 404.
    with httpx.Client(base_url=router, timeout=10) as h:
        r = h.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable", r.text
        assert "no instance" in r.json()["error"]["message"] and r.elapsed.total_seconds() < 1
        r = h.post("/v1/chat/completions", json={**CHAT, "model": "never-served"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
