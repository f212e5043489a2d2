"""`corral up` with `[corral] tls_cert/tls_key/ca`: every server it starts speaks HTTPS only.

The registry, the router and each sitter's port+1 API serve the certificate; the launcher's own
clients (readiness, backend status, dashboard views, fleet metrics, on-demand parking) verify
them against the CA, and so do the sitters and the router toward the registry. A client that
trusts the CA gets answers; plain HTTP gets none.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from launcher_helpers import Stack
from openai import OpenAI

from multihost.certs import make_ca, make_cert
from support import free_port, wait_until

# A whole stack on HTTPS: `make test-fleet` (CI runs it), keeping `make test` under 10 minutes.
pytestmark = [pytest.mark.slow, pytest.mark.fleet]


def test_up_with_tls_serves_https_everywhere(tmp_path: Path, stacks: list[Stack]) -> None:
    pki = tmp_path / "pki"
    ca = make_ca(pki)
    cert, key = make_cert(pki, "host", "127.0.0.1")
    registry, router, chat, od = free_port(), free_port(), free_port(), free_port()
    body = (
        f"[registry]\nport = {registry}\n[router]\nport = {router}\n"
        f'[[backend]]\nname = "chat"\npreset = "mock"\nmodels = ["m1"]\nport = {chat}\n'
        f'[[backend]]\nname = "od"\npreset = "mock"\nmodels = ["od-model"]\nport = {od}\n'
        'start = "on_demand"\nidle_unload_s = 600\n'
    )
    s = Stack(tmp_path, body)
    tls = f'[corral]\ntls_cert = "{cert}"\ntls_key = "{key}"\nca = "{ca}"\n'
    s.file.write_text(s.file.read_text().replace("[corral]\n", tls, 1))
    stacks.append(s)
    s.up()
    views = s.services()
    assert views["chat-0"]["state"] == "healthy" and views["od-0"]["parked"] is True, views

    # HTTPS, verified against the CA, on the registry, the router and a sitter's API.
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as c:
        assert c.get(f"https://127.0.0.1:{registry}/health").status_code == 200
        assert c.get(f"https://127.0.0.1:{router}/health").status_code == 200
        assert c.get(f"https://127.0.0.1:{chat + 1}/health").json()["backend"] == "healthy"
        backends = c.get(f"https://127.0.0.1:{registry}/v1/instances?kind=backend").json()["data"]
        assert [b["state"] for b in backends if b["service"].startswith("chat")] == ["healthy"]
    # Plain HTTP gets no answer from any of them.
    for port in (registry, router, chat + 1):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)

    # The OpenAI SDK through the router over HTTPS; the on-demand model wakes through its
    # parked sitter's HTTPS admin API.
    http = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=60)
    client = OpenAI(
        base_url=f"https://127.0.0.1:{router}/v1", api_key="none", max_retries=0, http_client=http
    )
    for model in ("m1", "od-model"):
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content
    wait_until(lambda: s.services()["od-0"]["state"] == "healthy", 15, what="od-0 awake")

    # The launcher's views read the router and the sitters over HTTPS.
    wait_until(
        lambda: "m1" in {m["name"] for m in s.api("GET", "/api/router").json()["models"]}, 15, what="view"
    )
    metrics = s.api("GET", "/metrics").text
    for target in ("router", "chat-0", "od-0"):
        assert f'corral_fleet_scrape_up{{target="{target}"}} 1.0' in metrics, target
