"""`corral mock` as a real process on loopback, spoken to with the official openai SDK."""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
from collections.abc import Iterator

import httpx
import openai
import pytest

from support import CorralProcs, free_port, wait_http


def start_mock(procs: CorralProcs, *args: str) -> str:
    """Start `corral mock ARGS` on a free port; return its base URL once /health answers 200."""
    port = free_port()
    procs.start("mock", "--port", str(port), *args)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health", timeout=30)
    return base


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    """One mock for the read-only tests of this module (no delays: fast)."""
    procs = CorralProcs()
    try:
        yield start_mock(procs, "--models", "m1,m2", "--seed", "7", "--max-tokens", "16")
    finally:
        procs.close()


@pytest.fixture
def client(base: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_chat_non_streaming_shape_and_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "hello there"}])
    assert r.object == "chat.completion"
    assert r.model == "m1"
    assert r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.completion_tokens == len(choice.message.content.split())
    assert r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_max_tokens_and_max_completion_tokens_cut_with_length(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "tell me a long story"}]
    r = client.chat.completions.create(model="m1", messages=msgs, max_tokens=2)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.completion_tokens == 2
    assert r.choices[0].finish_reason == "length"
    r2 = client.chat.completions.create(model="m1", messages=msgs, max_completion_tokens=3)  # type: ignore[arg-type]
    assert r2.usage is not None and r2.usage.completion_tokens == 3
    r3 = client.chat.completions.create(
        model="m1",
        messages=msgs,
        max_tokens=40,
        extra_body={"ignore_eos": True},  # type: ignore[arg-type]
    )
    assert r3.usage is not None and r3.usage.completion_tokens == 40
    assert r3.choices[0].finish_reason == "length"


def test_short_answer_finishes_with_stop(client: openai.OpenAI) -> None:
    """Without ignore_eos some prompts end "naturally" (4..63 tokens) before a large limit."""
    reasons = set()
    for i in range(12):
        r = client.chat.completions.create(
            model="m1",
            messages=[{"role": "user", "content": f"q{i}"}],
            max_tokens=64,  # type: ignore[arg-type]
        )
        reasons.add(r.choices[0].finish_reason)
        if r.choices[0].finish_reason == "stop":
            assert r.usage is not None and r.usage.completion_tokens < 64
    assert "stop" in reasons


def test_chat_stream_chunks_roles_and_include_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m2",
        messages=[{"role": "user", "content": "stream please"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 5
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_ends_with_done_and_no_usage_by_default(base: str) -> None:
    body = {"model": "m1", "messages": [{"role": "user", "content": "x"}], "stream": True, "max_tokens": 3}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    docs = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert all("usage" not in d for d in docs)
    assert docs[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_stream_joined_equals_non_streamed_text(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "same prompt"}]
    full = client.chat.completions.create(model="m1", messages=msgs, max_tokens=8)  # type: ignore[arg-type]
    parts = client.chat.completions.create(model="m1", messages=msgs, max_tokens=8, stream=True)  # type: ignore[arg-type]
    joined = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
    assert joined == full.choices[0].message.content


def test_completions_non_stream_stream_and_batch(client: openai.OpenAI) -> None:
    r = client.completions.create(model="m1", prompt="Once upon a time", max_tokens=4)
    assert r.object == "text_completion"
    assert r.choices[0].text and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens == 4
    batch = client.completions.create(model="m1", prompt=["a", "b c"], max_tokens=3)
    assert [c.index for c in batch.choices] == [0, 1]
    chunks = list(
        client.completions.create(
            model="m1",
            prompt="Once upon a time",
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == r.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_embeddings_float_and_base64_are_unit_and_deterministic(client: openai.OpenAI, base: str) -> None:
    # The SDK asks for base64 unless told otherwise, and decodes it: both paths must agree.
    via_sdk = client.embeddings.create(model="m1", input=["alpha", "beta"])
    assert via_sdk.object == "list" and len(via_sdk.data) == 2
    assert [d.index for d in via_sdk.data] == [0, 1]
    floats = client.embeddings.create(model="m1", input="alpha", encoding_format="float")
    v = floats.data[0].embedding
    assert len(v) == 64
    assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-9)
    assert via_sdk.data[0].embedding == pytest.approx(v, abs=1e-6)
    assert via_sdk.data[1].embedding != via_sdk.data[0].embedding
    raw = httpx.post(
        f"{base}/v1/embeddings", json={"model": "m1", "input": "alpha", "encoding_format": "base64"}
    ).json()
    decoded = struct.unpack("<64f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(decoded) == pytest.approx(v, abs=1e-6)
    small = client.embeddings.create(model="m1", input="alpha", dimensions=8, encoding_format="float")
    assert len(small.data[0].embedding) == 8
    assert floats.usage.prompt_tokens == 1


async def test_async_client_chat_stream_and_embeddings(base: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0) as c:
        r = await c.chat.completions.create(
            model="m2", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert r.usage is not None and r.usage.completion_tokens <= 3
        stream = await c.chat.completions.create(
            model="m2", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
        assert text == r.choices[0].message.content
        cr = await c.completions.create(model="m2", prompt="p", max_tokens=2, stream=True)
        assert [x async for x in cr]
        e = await c.embeddings.create(model="m2", input="x")
        assert len(e.data[0].embedding) == 64


def test_models_list_and_retrieve(client: openai.OpenAI, base: str) -> None:
    assert [m.id for m in client.models.list()] == ["m1", "m2"]
    assert client.models.retrieve("m2").id == "m2"
    doc = httpx.get(f"{base}/models").json()
    assert doc["object"] == "list" and [m["id"] for m in doc["data"]] == ["m1", "m2"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_same_seed_same_text_other_seed_or_prompt_differs(client: openai.OpenAI, procs: CorralProcs) -> None:
    msgs = [{"role": "user", "content": "determinism"}]
    a = client.chat.completions.create(model="m1", messages=msgs, max_tokens=12)  # type: ignore[arg-type]
    b = client.chat.completions.create(model="m1", messages=msgs, max_tokens=12)  # type: ignore[arg-type]
    assert a.choices[0].message.content == b.choices[0].message.content
    other_prompt = client.chat.completions.create(
        model="m1",
        messages=[{"role": "user", "content": "else"}],
        max_tokens=12,  # type: ignore[arg-type]
    )
    assert other_prompt.choices[0].message.content != a.choices[0].message.content
    # A second process with the same seed says the same; another seed says something else.
    same = start_mock(procs, "--models", "m1", "--seed", "7")
    other = start_mock(procs, "--models", "m1", "--seed", "8")
    body = {"model": "m1", "messages": msgs, "max_tokens": 12}
    text_same = httpx.post(f"{same}/v1/chat/completions", json=body).json()["choices"][0]["message"][
        "content"
    ]
    text_other = httpx.post(f"{other}/v1/chat/completions", json=body).json()["choices"][0]["message"][
        "content"
    ]
    assert text_same == a.choices[0].message.content
    assert text_other != text_same


def test_request_id_is_echoed_and_names_the_completion(base: str) -> None:
    body = {"model": "m1", "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"X-Request-ID": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    assert r.json()["id"] == "chatcmpl-req-42"
    assert httpx.get(f"{base}/health", headers={"X-Request-ID": "h1"}).headers["x-request-id"] == "h1"
    bad = httpx.post(f"{base}/v1/chat/completions", content=b"{", headers={"X-Request-ID": "bad-1"})
    assert bad.headers["x-request-id"] == "bad-1"


def test_raw_http11_stream_is_chunked_and_terminated(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps({"model": "m1", "prompt": "x", "max_tokens": 4, "stream": True}).encode()
    req = (
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(req)
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            assert chunk, "server closed early"
            data += chunk
    assert b"data: [DONE]" in data


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", b"{not json", 400, None),
        ("/v1/chat/completions", b"[1, 2]", 400, None),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
        ("/v1/chat/completions", b'{"model": "m1"}', 400, "messages"),
        ("/v1/chat/completions", b'{"model": "m1", "messages": []}', 400, "messages"),
        (
            "/v1/chat/completions",
            b'{"model": "m1", "messages": [{"role": "user"}], "max_tokens": 0}',
            400,
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "m1", "messages": [{"role": "user"}], "stream_options": {}}',
            400,
            "stream_options",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "ghost", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model",
        ),
        ("/v1/completions", b'{"model": "m1"}', 400, "prompt"),
        ("/v1/completions", b'{"model": "ghost", "prompt": "x"}', 404, "model"),
        ("/v1/embeddings", b'{"model": "m1"}', 400, "input"),
        ("/v1/embeddings", b'{"model": "m1", "input": []}', 400, "input"),
        ("/v1/embeddings", b'{"model": "ghost", "input": "x"}', 404, "model"),
    ],
)
def test_bad_input_gets_openai_error_json(
    base: str, path: str, body: bytes, status: int, param: str | None
) -> None:
    r = httpx.post(f"{base}{path}", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    err = r.json()["error"]
    assert err["message"] and err["type"] in ("invalid_request_error", "not_found_error")
    assert err["param"] == param


def test_sdk_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "x"}])
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m1", messages=[])


def test_wrong_method_and_unknown_path(base: str) -> None:
    r = httpx.get(f"{base}/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["type"]
    r = httpx.post(f"{base}/health")
    assert r.status_code == 405
    r = httpx.get(f"{base}/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_stats_and_metrics_count_requests(base: str, client: openai.OpenAI) -> None:
    before = httpx.get(f"{base}/stats").json()
    client.completions.create(model="m2", prompt="count me", max_tokens=1)
    after = httpx.get(f"{base}/stats").json()
    assert after["total"] == before["total"] + 1
    assert after["completed"] == before["completed"] + 1
    assert after["by_model"]["m2"]["completed"] == before["by_model"]["m2"]["completed"] + 1
    assert after["in_flight"] == 0
    assert after["total"] == after["in_flight"] + after["completed"] + after["aborted"] + after["failed"]
    text = httpx.get(f"{base}/metrics").text
    assert f"corral_mock_requests_completed_total {after['completed']}" in text
    assert 'corral_mock_requests_total{model="m2"}' in text


def test_keep_alive_and_pipelined_requests_answer_in_order(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    one = b"GET /health HTTP/1.1\r\nhost: x\r\nx-request-id: %d\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(one % 1 + one % 2 + one % 3)
        data = b""
        while data.count(b'{"status":"ok"}') < 3:
            chunk = s.recv(65536)
            assert chunk
            data += chunk
    ids = [line.split(b": ")[1] for line in data.split(b"\r\n") if line.startswith(b"x-request-id")]
    assert ids == [b"1", b"2", b"3"]
