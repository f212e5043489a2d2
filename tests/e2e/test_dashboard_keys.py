"""The dashboard's per-key table (in flight, queued, tokens/minute) in Chromium, real `corral up`."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from dash_support import start_launcher

from corral.router.keys import digest
from support import CorralProcs, free_port, wait_until

pytestmark = pytest.mark.browser


def config(router_port: int) -> str:
    return f"""
[registry]
port = {free_port()}

[router]
port = {router_port}
queue_timeout_s = 60

[[router.keys]]
name = "team-a"
key_sha256 = "{digest("key-a")}"

[[router.keys]]
name = "team-b"
key_sha256 = "{digest("key-b")}"
priority = 5

[[backend]]
name = "chat"
preset = "mock"
models = ["m1"]
port = {free_port()}
max_concurrency = 1
args = ["--ttft-ms", "50", "--itl-ms", "20"]
"""


def test_keys_table_shows_in_flight_queued_and_tokens_per_minute(
    page: Any, procs: CorralProcs, tmp_path: Path
) -> None:
    router_port = free_port()
    launcher = start_launcher(procs, tmp_path, config(router_port))
    try:
        router = f"http://127.0.0.1:{router_port}"
        chat = router + "/v1/chat/completions"
        auth_a = {"Authorization": "Bearer key-a"}
        ok = {**auth_a, "Content-Type": "application/json"}
        body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        wait_until(lambda: httpx.post(chat, json=body, headers=ok, timeout=10).status_code == 200, 90)

        def hold() -> None:  # team-a holds the one slot with a long stream until cancelled
            long = {**body, "max_tokens": 5000, "ignore_eos": True, "stream": True}
            with httpx.stream(
                "POST", chat, json=long, headers={**auth_a, "X-Request-ID": "hold"}, timeout=120
            ) as r:
                r.read()

        def queued() -> None:
            httpx.post(chat, json=body, headers={"Authorization": "Bearer key-b"}, timeout=120)

        threads = [threading.Thread(target=hold)] + [threading.Thread(target=queued) for _ in range(2)]
        threads[0].start()
        wait_until(lambda: 'key_in_flight{key="team-a"} 1.0' in httpx.get(router + "/metrics").text, 30)
        for t in threads[1:]:
            t.start()

        page.goto(launcher.url + "/")
        row_b = page.locator('#keys tr[data-key="team-b"] td')
        page.wait_for_function(
            """() => {
                const a = document.querySelector('#keys tr[data-key="team-a"]');
                const b = document.querySelector('#keys tr[data-key="team-b"]');
                return a && b && a.children[1].textContent === "1" && b.children[2].textContent === "2";
            }""",
            timeout=60_000,
        )
        assert row_b.nth(2).get_attribute("class") == "warn"
        assert httpx.post(router + "/v1/cancel/hold", headers=auth_a).status_code == 200
        for t in threads:
            t.join()
        # team-b's two answers (3 tokens each plus prompts) show up as tokens per minute.
        page.wait_for_function(
            """() => {
                const b = document.querySelector('#keys tr[data-key="team-b"]');
                return b && b.children[2].textContent === "0" && Number(b.children[3].textContent) > 0;
            }""",
            timeout=60_000,
        )
        assert page.locator("#keys").is_visible()
    finally:
        launcher.stop()
