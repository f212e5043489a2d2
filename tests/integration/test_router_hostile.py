"""A real `corral router` process as a hostile client and a careful reviewer meet it: a corpus of
malformed requests (each a 4xx with an OpenAI error body, never a 5xx, the router unharmed),
large answers, reused request ids, bounded metric labels, and a relayed Retry-After."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_router_support import start_mock, start_router

from support import CorralProcs, free_port, wait_http, wait_until

PROCS = Path(__file__).parent / "procs"
Fleet = tuple[CorralProcs, str, str]
CHAT = b'{"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CorralProcs, str, str]]:
    procs = CorralProcs()
    try:
        mock = start_mock(procs, "m1,big", "--embedding-dim", "65536", "--ttft-ms", "300", "--itl-ms", "20")
        cfg = {"timeouts": {"read": 8.0}, "limits": {"max_head_bytes": 8192, "head_timeout_s": 1.0}}
        router = start_router(procs, [mock], config=cfg, tmp=tmp_path_factory.mktemp("hostile"))
        yield procs, mock, router
    finally:
        procs.close()


def raw_exchange(url: str, data: bytes, timeout: float = 15.0) -> bytes:
    """Send ``data`` on a fresh connection; return all bytes until the router closes or one
    whole response with a Content-Length arrived."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = s.recv(65536)
            except OSError:
                break
            if not piece:
                break
            got += piece
            head, sep, body = got.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= n:
                    break
        return got


def post(body: bytes, path: bytes = b"/v1/chat/completions", extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
        % (path, len(body), extra, body)
    )


CORPUS: dict[str, tuple[bytes, int]] = {
    "nested-100k": (post(b'{"model": "m1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 400),
    "nested-objects": (post(b'{"a":' * 50_000 + b"1" + b"}" * 50_000), 400),
    "invalid-utf8": (post(b'{"model": "m1\xff\xfe", "messages": []}'), 400),
    "overlong-utf8": (post(b'{"model": "\xc0\xaf"}'), 400),
    "utf16-bom": (post('{"model": "m1"}'.encode("utf-16")), 400),
    "not-json": (post(b"model=m1"), 400),
    "json-array": (post(b"[1, 2, 3]"), 400),
    "json-null": (post(b"null"), 400),
    "empty-body": (post(b""), 400),
    "model-not-string": (post(b'{"model": ["m1"]}'), 400),
    "model-empty": (post(b'{"model": ""}'), 400),
    "huge-number": (post(b'{"model": "m1", "n": ' + b"9" * 100_000 + b"}"), 400),
    "nan": (post(b'{"model": "nope", "temperature": NaN}'), 404),
    "unknown-model": (post(b'{"model": "no-such-model"}'), 404),
    "cl+te": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "bad-chunk-size": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"xyz\r\n{}\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-overflow": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffffffff\r\n{}\r\n",
        400,
    ),
    "two-content-lengths": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}}",
        400,
    ),
    "space-before-colon": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost : x\r\nContent-Length: 2\r\n\r\n{}",
        400,
    ),
    "bare-lf-garbage": (b"\x00\x01\x02 garbage\n\n", 400),
    "header-1mib": (post(CHAT, extra=b"X-Big: " + b"a" * (1024 * 1024) + b"\r\n"), 431),
    "many-headers": (post(CHAT, extra=b"".join(b"X-H%d: v\r\n" % i for i in range(2000))), 431),
    "url-64k": (post(CHAT, path=b"/v1/chat/completions?" + b"a" * 65536), 414),
    "no-route": (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "bad-method-path": (b"DELETE /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "large-body": (post(b'{"model": "m1", "p": "' + b"a" * (33 * 1024 * 1024) + b'"}'), 413),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_malformed_request_corpus_gets_openai_4xx_never_5xx(fleet: Fleet, name: str) -> None:
    _, _, router = fleet
    raw, want = CORPUS[name]
    got = raw_exchange(router, raw)
    head, _, body = got.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert status == want, (name, head)
    err = json.loads(body)["error"]
    assert err["message"] and err["type"]
    assert httpx.get(router + "/health", timeout=10).status_code == 200  # unharmed


def test_a_trickling_client_is_cut_by_the_head_timeout(fleet: Fleet) -> None:
    _, _, router = fleet
    host, port = router.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        got = b""
        try:
            for _ in range(300):  # one header line every 50 ms: no per-read timer would fire
                s.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.05)
        except OSError:
            pass
        s.settimeout(5)
        try:
            while piece := s.recv(65536):
                got += piece
        except OSError:
            pass
    assert got.startswith(b"HTTP/1.1 408"), got[:100]
    assert time.monotonic() - t0 < 10


def test_a_non_streamed_answer_over_256_kib_is_relayed(fleet: Fleet) -> None:
    """Embeddings of 2 x 65536 floats (~2.6 MB): the router's reader paused at 256 KiB and hung."""
    _, _, router = fleet
    body = {"model": "big", "input": ["text 1", "text 2"]}
    r = httpx.post(router + "/v1/embeddings", json=body, timeout=30)
    assert r.status_code == 200 and len(r.content) > 1024 * 1024
    assert [len(d["embedding"]) for d in r.json()["data"]] == [65536] * 2


def test_unknown_model_names_are_not_metric_labels(fleet: Fleet) -> None:
    _, _, router = fleet
    with httpx.Client(timeout=10) as c:
        for i in range(20):
            assert c.post(router + "/v1/chat/completions", json={"model": f"attacker-{i}"}).status_code == 404
        text = c.get(router + "/metrics").text
    assert "attacker-" not in text
    assert 'corral_router_errors_total{model="unknown",status="404"}' in text


def test_two_requests_with_one_request_id_do_not_collide(fleet: Fleet) -> None:
    """The first to finish removed the other's entry: the second could no longer be cancelled."""
    _, _, router = fleet
    hdr = {"X-Request-ID": "same-id-1"}
    fast = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    slow = {**fast, "max_tokens": 400, "stream": True, "ignore_eos": True}
    with ThreadPoolExecutor(2) as ex, httpx.Client(timeout=30) as c:
        stream_lines: list[str] = []

        def read_stream() -> None:
            with c.stream("POST", router + "/v1/chat/completions", json=slow, headers=hdr) as r:
                stream_lines.extend(r.iter_lines())

        long = ex.submit(read_stream)
        wait_until(lambda: httpx.get(router + "/health").json()["in_flight"], 10, what="stream in flight")
        assert c.post(router + "/v1/chat/completions", json=fast, headers=hdr).status_code == 200
        r = httpx.post(router + "/v1/cancel/same-id-1", timeout=10)
        assert r.status_code == 200
        long.result(timeout=30)
    assert any('"cancelled"' in line for line in stream_lines)


def test_a_backend_retry_after_is_relayed(procs: CorralProcs, tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, str(PROCS / "busy_backend.py"), str(port), "m1"]
    p = subprocess.Popen(argv, start_new_session=True)
    procs.procs.append(p)
    backend = f"http://127.0.0.1:{port}"
    wait_http(backend + "/v1/models", timeout=30)
    router = start_router(procs, [backend], config={"retries": 0}, tmp=tmp_path)
    r = httpx.post(router + "/v1/chat/completions", content=CHAT, timeout=10)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "rate_limited"


def test_limit_flags_override_the_config(fleet: Fleet, tmp_path: Path) -> None:
    procs, mock, _ = fleet
    cfg = {"limits": {"max_head_bytes": 65536}}
    router = start_router(procs, [mock], "--max-head-bytes", "2048", config=cfg, tmp=tmp_path)
    got = raw_exchange(router, post(CHAT, extra=b"X-Big: " + b"a" * 4096 + b"\r\n"))
    assert got.startswith(b"HTTP/1.1 431"), got[:80]
    ok = raw_exchange(router, post(CHAT, extra=b"X-Small: " + b"a" * 512 + b"\r\n"))
    assert ok.startswith(b"HTTP/1.1 200"), ok[:80]
