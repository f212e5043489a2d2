"""API keys through a real router: hashed keys, scopes, expiry, the keys file, limits, usage."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest
from test_router_support import start_mock, start_router

from corral.router.keys import digest
from support import CorralProcs, free_port, wait_http, wait_until

BODY = {"model": "m1", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key(file: Path, name: str, *flags: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "corral", "keys", "new", name, "--file", str(file), *flags],
        capture_output=True,
        text=True,
        check=True,
    )
    key = out.stdout.strip()
    assert key.startswith("sk-corral-") and key not in file.read_text() and digest(key) in file.read_text()
    return key


def test_keys_scopes_expiry_models_usage_and_reload(procs: CorralProcs, tmp_path: Path) -> None:
    mock = start_mock(procs, "m1,m2")
    keys_file = tmp_path / "keys.toml"
    b_key = new_key(keys_file, "team-b", "--models", "m2")
    old_key = new_key(keys_file, "old", "--expires", "2020-01-01")
    cfg = {
        "keys": [{"name": "team-a", "key_sha256": digest("ka-secret"), "models": ["m1*"]}],
        "keys_file": str(keys_file),
        "keys_reload_s": 0.1,
        "admin_token": "adm",
        "aliases": {"fast": "m1"},
    }
    log = tmp_path / "router.log"
    port = free_port()
    cfg_path = tmp_path / "router.toml"
    from test_router_support import to_toml

    cfg_path.write_text(to_toml(cfg))
    procs.start(
        "router", "--port", str(port), "--worker-url", mock, "--config", str(cfg_path),
        env={"CORRAL_API_KEYS": "legacy-secret"}, log=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    wait_until(lambda: httpx.get(url + "/health").json()["healthy"] == 1, 30, what="worker healthy")
    chat = url + "/v1/chat/completions"

    assert httpx.post(chat, json=BODY).status_code == 401
    assert httpx.post(chat, json=BODY, headers=bearer("wrong")).status_code == 401
    r = httpx.post(chat, json=BODY, headers=bearer(old_key))
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]

    a = openai.OpenAI(base_url=url + "/v1", api_key="ka-secret", max_retries=0)
    b = openai.OpenAI(base_url=url + "/v1", api_key=b_key, max_retries=0)
    legacy = openai.OpenAI(base_url=url + "/v1", api_key="legacy-secret", max_retries=0)
    assert sorted(m.id for m in a.models.list()) == ["fast", "m1"]
    assert [m.id for m in b.models.list()] == ["m2"]
    assert sorted(m.id for m in legacy.models.list()) == ["fast", "m1", "m2"]

    with pytest.raises(openai.PermissionDeniedError) as denied:
        a.chat.completions.create(model="m2", messages=[{"role": "user", "content": "hi"}])
    assert "may use: m1, fast" in str(denied.value) and denied.value.status_code == 403

    done = a.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert done.usage is not None and done.usage.completion_tokens == 3
    stream = b.chat.completions.create(
        model="m2", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
    )
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)  # the usage the router asked for is stripped
    legacy.chat.completions.create(model="m2", messages=[{"role": "user", "content": "hi"}], max_tokens=2)

    assert httpx.get(url + "/admin/usage").status_code == 401
    usage = httpx.get(url + "/admin/usage", headers=bearer("adm")).json()["data"]
    by = {(row["key"], row["model"]): row for row in usage}
    assert by[("team-a", "m1")]["completion_tokens"] == 3
    assert by[("team-b", "m2")]["completion_tokens"] == 5 and by[("team-b", "m2")]["requests"] == 1
    assert any(k.startswith("env-") for k, _ in by)
    keys_view = {k["name"]: k for k in httpx.get(url + "/admin/keys", headers=bearer("adm")).json()["data"]}
    assert keys_view["team-b"]["tokens_per_minute"] > 0 and keys_view["team-a"]["in_flight"] == 0

    # A key added to the file works without a restart.
    c_key = new_key(keys_file, "team-c")
    wait_until(
        lambda: httpx.post(chat, json=BODY, headers=bearer(c_key)).status_code == 200, 10, what="reloaded key"
    )

    metrics = httpx.get(url + "/metrics").text
    assert 'corral_router_key_completion_tokens_total{key="team-b",model="m2"} 5.0' in metrics
    assert 'corral_router_key_refused_total{code="model_not_allowed",key="team-a"} 1.0' in metrics
    logged = log.read_text() + metrics
    for secret in ("ka-secret", b_key, c_key, old_key, "legacy-secret"):
        assert secret not in logged


def test_per_key_limits_answer_429_with_retry_after(procs: CorralProcs, tmp_path: Path) -> None:
    slow = start_mock(procs, "m1", "--ttft-ms", "1500")
    cfg = {
        "keys": [
            {"name": "rpm2", "key_sha256": digest("k-rpm"), "rpm": 2},
            {"name": "one", "key_sha256": digest("k-one"), "max_concurrency": 1},
            {"name": "tpm", "key_sha256": digest("k-tpm"), "tpm": 60},
        ]
    }
    base = start_router(procs, [slow], config=cfg, tmp=tmp_path)
    url = base + "/v1/chat/completions"
    with httpx.Client(timeout=30) as c:
        codes = [c.post(url, json=BODY, headers=bearer("k-rpm")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = c.post(url, json=BODY, headers=bearer("k-rpm"))
        assert r.json()["error"]["code"] == "rpm_limit" and 1 <= int(r.headers["retry-after"]) <= 30

        first: list[int] = []
        t = threading.Thread(
            target=lambda: first.append(
                httpx.post(url, json=BODY, headers=bearer("k-one"), timeout=30).status_code
            )
        )
        t.start()
        wait_until(lambda: 'key_in_flight{key="one"} 1.0' in c.get(base + "/metrics").text, 10)
        r = c.post(url, json=BODY, headers=bearer("k-one"))
        assert r.status_code == 429 and r.json()["error"]["code"] == "concurrency_limit"
        t.join()
        assert first == [200]

        # tpm: 60 tokens a minute; an answer of 100 tokens overdraws the bucket: the next one waits.
        big = {**BODY, "max_tokens": 100, "ignore_eos": True}
        assert c.post(url, json=big, headers=bearer("k-tpm")).status_code == 200
        r = c.post(url, json=BODY, headers=bearer("k-tpm"))
        assert r.status_code == 429 and r.json()["error"]["code"] == "tpm_limit"
        assert int(r.headers["retry-after"]) >= 30
