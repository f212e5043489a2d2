"""Pure parts of corral.mock: token plans, embeddings, validation, stats, SSE shapes."""

from __future__ import annotations

import asyncio
import json
import math
import socket

import pytest

from corral.errors import ConfigError
from corral.mock import MockServer, params, shapes, tokens
from corral.mock.config import MockConfig, parse_models
from corral.mock.stats import Stats


def test_plan_is_deterministic_and_honours_limit() -> None:
    h = tokens.prompt_hash(1, "m\0hello")
    assert tokens.plan(h, 10, False) == tokens.plan(tokens.prompt_hash(1, "m\0hello"), 10, False)
    assert tokens.prompt_hash(2, "m\0hello") != h
    toks, reason = tokens.plan(h, 2, False)
    assert len(toks) == 2 and reason == "length" and not toks[0].startswith(" ")
    toks, reason = tokens.plan(h, 100, True)
    assert len(toks) == 100 and reason == "length"
    toks, reason = tokens.plan(h, 1000, False)
    assert 4 <= len(toks) < 64 and reason == "stop"


def test_embedding_is_unit_and_any_dimension() -> None:
    for dim in (1, 64, 200):
        v = tokens.embedding(0, "x", dim)
        assert len(v) == dim and math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-9)
    assert tokens.embedding(0, "x", 8) == tokens.embedding(0, "x", 8) != tokens.embedding(1, "x", 8)


def test_validation_messages_name_the_param() -> None:
    with pytest.raises(params.BadRequest) as e:
        params.chat({"model": "m", "messages": [{"role": "user"}], "max_tokens": True}, "m", 16)
    assert e.value.param == "max_tokens"
    g = params.chat({"messages": [{"role": "user", "content": [{"type": "text", "text": "a b"}]}]}, "m", 16)
    assert g.prompts == ["user\na b"] and g.limit == 16
    g = params.completion({"prompt": [[1, 2, 3], [4]], "max_completion_tokens": 3}, "m", 16)
    assert g.prompt_tokens == 4 and len(g.prompts) == 2 and g.limit == 3
    with pytest.raises(params.BadRequest):
        params.completion({"prompt": [1, "a"]}, "m", 16)
    with pytest.raises(params.BadRequest):
        params.chat({"messages": [{"role": "user"}], "stream": "yes"}, "m", 16)


def test_stats_keep_the_invariant_and_render_prometheus() -> None:
    s = Stats(("a",))
    m = s.by_model["a"]
    for outcome in ("completed", "aborted", "failed"):
        s.begin(m)
        s.end(m, outcome)
    s.begin(m)
    d = s.as_dict()
    assert d["total"] == 4 == d["in_flight"] + d["completed"] + d["aborted"] + d["failed"]
    assert d["by_model"]["a"]["in_flight"] == 1
    text = s.prometheus()
    assert "corral_mock_requests_aborted_total 1" in text
    assert 'vllm:num_requests_running{model_name="a"} 1' in text


def test_stream_chunks_are_valid_json() -> None:
    shape = shapes.StreamShape(True, 'id"1', 5, "m\\x", include_usage=True)
    for chunk in (
        shape.role(),
        shape.token(0, b" hi"),
        shape.finish(0, "stop"),
        shape.usage(shapes.usage(1, 2)),
    ):
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n")
        doc = json.loads(chunk[6:])
        assert doc["id"] == 'id"1' and doc["model"] == "m\\x" and "usage" in doc


def test_config_rejects_bad_values_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--fail-rate"):
        MockConfig(fail_rate=2)
    with pytest.raises(ConfigError, match="--models"):
        MockConfig(models=())
    assert parse_models(" a, b,,a ") == ("a", "b")


async def test_embedded_server_sets_tcp_nodelay_and_serves() -> None:
    server = MockServer(MockConfig(port=0, models=("m",)))
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        (conn,) = server.connections
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        await writer.wait_closed()
    finally:
        await server.close()
