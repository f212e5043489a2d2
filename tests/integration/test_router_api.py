"""The router's API through real processes: openai SDK (sync + async) -> corral router -> corral mock."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from test_router_support import start_mock, start_router

from support import CorralProcs

KEY = "sk-test-key"
ADMIN = "admin-secret"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two mocks (m1 on both, m2 on one) behind one router with an alias, a key and a small body limit."""
    procs = CorralProcs()
    try:
        tmp: Path = tmp_path_factory.mktemp("router")
        a = start_mock(procs, "m1,m2", "--ttft-ms", "0", "--itl-ms", "0")
        b = start_mock(procs, "m1", "--ttft-ms", "0", "--itl-ms", "0")
        config = {"aliases": {"gpt-alias": "m1"}, "max_body_bytes": 65536, "admin_token": ADMIN}
        router = start_router(procs, [a, b], config=config, tmp=tmp, env={"CORRAL_API_KEYS": f"other,{KEY}"})
        yield {"router": router, "a": a, "b": b}
    finally:
        procs.close()


def client(fleet: dict[str, str], key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet["router"] + "/v1", api_key=key, max_retries=0)


def test_chat_non_streaming_and_usage(fleet: dict[str, str]) -> None:
    r = client(fleet).chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    assert r.choices[0].message.content
    assert r.usage is not None and r.usage.completion_tokens == 5


def test_streaming_passes_events_and_hides_injected_usage(fleet: dict[str, str]) -> None:
    chunks = list(
        client(fleet).chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
        )
    )
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 4
    assert all(c.choices for c in chunks), "the usage chunk the router asked for must be stripped"
    text = httpx.get(fleet["router"] + "/metrics").text
    assert 'corral_router_completion_tokens_total{model="m1"}' in text


def test_streaming_with_client_usage_keeps_it(fleet: dict[str, str]) -> None:
    chunks = list(
        client(fleet).chat.completions.create(
            model="m1",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_async_client_completions_embeddings_and_alias(fleet: dict[str, str]) -> None:
    c = openai.AsyncOpenAI(base_url=fleet["router"] + "/v1", api_key=KEY, max_retries=0)
    async with c:
        r = await c.completions.create(model="gpt-alias", prompt="say", max_tokens=3)
        assert r.model == "gpt-alias" and r.choices[0].text  # the name the client asked for
        chunks = await c.chat.completions.create(
            model="gpt-alias", messages=[{"role": "user", "content": "a"}], max_tokens=3, stream=True
        )
        assert {ch.model async for ch in chunks} == {"gpt-alias"}
        e = await c.embeddings.create(model="m2", input="x")
        assert len(e.data[0].embedding) > 0
        stream = await c.chat.completions.create(
            model="m2", messages=[{"role": "user", "content": "a"}], max_tokens=2, stream=True
        )
        got = [ch async for ch in stream]
        assert any(ch.choices and ch.choices[0].finish_reason for ch in got)


def test_models_union_lists_aliases(fleet: dict[str, str]) -> None:
    ids = [m.id for m in client(fleet).models.list()]
    assert ids == ["m1", "m2", "gpt-alias"]
    r = httpx.get(fleet["router"] + "/models", headers={"Authorization": f"Bearer {KEY}"})
    assert r.json()["object"] == "list"


def test_request_id_echoed_and_generated(fleet: dict[str, str]) -> None:
    url = fleet["router"] + "/v1/chat/completions"
    body = {"model": "m1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(url, json=body, headers={**auth, "X-Request-ID": "my-id-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "my-id-1"
    assert "my-id-1" in r.json()["id"]  # the mock builds its id from the forwarded X-Request-ID
    r2 = httpx.post(url, json=body, headers=auth)
    assert r2.headers["x-request-id"]
    assert httpx.get(fleet["router"] + "/health").headers["x-request-id"]


def test_auth_required(fleet: dict[str, str]) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(fleet, key="wrong").chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "x"}]
        )
    r = httpx.post(fleet["router"] + "/v1/chat/completions", json={"model": "m1"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_admin_token_and_workers_api(fleet: dict[str, str]) -> None:
    base = fleet["router"]
    assert httpx.get(base + "/list_workers").status_code == 401
    assert httpx.get(base + "/workers", headers={"Authorization": "Bearer nope"}).status_code == 401
    admin = {"Authorization": f"Bearer {ADMIN}"}
    urls = httpx.get(base + "/list_workers", headers=admin).json()["urls"]
    assert sorted(urls) == sorted([fleet["a"], fleet["b"]])
    ghost = "http://127.0.0.1:9"  # never healthy: listed, never routed to
    assert httpx.post(base + "/add_worker", params={"url": ghost}, headers=admin).status_code == 200
    workers = {w["url"]: w for w in httpx.get(base + "/workers", headers=admin).json()["workers"]}
    assert workers[ghost]["healthy"] is False
    for _ in range(10):
        r = client(fleet).chat.completions.create(model="m1", messages=[{"role": "user", "content": "x"}])
        assert r.choices
    r = httpx.request("DELETE", base + "/workers", json={"url": ghost}, headers=admin)
    assert r.status_code == 200
    assert httpx.post(base + "/remove_worker", params={"url": ghost}, headers=admin).status_code == 404


def test_unknown_and_missing_model(fleet: dict[str, str]) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client(fleet).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "m1" in str(exc.value) and "m2" in str(exc.value)
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(fleet["router"] + "/v1/chat/completions", json={"messages": []}, headers=auth)
    assert r.status_code == 400 and "model" in r.json()["error"]["message"]


def test_invalid_json_and_body_too_large(fleet: dict[str, str]) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    url = fleet["router"] + "/v1/chat/completions"
    r = httpx.post(url, content=b"{not json", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    big = b'{"model": "m1", "prompt": "' + b"x" * 70000 + b'"}'
    r = httpx.post(url, content=big, headers=auth)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_cancel_unknown_request_is_404(fleet: dict[str, str]) -> None:
    r = httpx.post(fleet["router"] + "/v1/cancel/nope", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404


def test_one_stream_completes_fast_no_nagle_stall(fleet: dict[str, str]) -> None:
    """A plain HTTP client streaming through the router sees no 40 ms delayed-ACK stall."""
    host, port = fleet["router"].removeprefix("http://").split(":")
    body = b'{"model": "m1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8, "stream": true}'
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    best = float("inf")
    for _ in range(5):  # best of a few: the machine is shared, a stall would show in every run
        conn = http.client.HTTPConnection(host, int(port))
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        best = min(best, time.perf_counter() - t0)
        conn.close()
        assert resp.status == 200 and data.rstrip().endswith(b"data: [DONE]")
    assert best < 0.030, f"one stream took {best * 1000:.1f} ms"
