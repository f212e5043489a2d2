"""The router's own HTTP/1.1 server (corral.router.http) spoken to over raw sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from test_router_support import start_mock, start_router

from support import CorralProcs

BODY = b'{"model": "m1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4%s}'


@pytest.fixture(scope="module")
def router() -> Iterator[tuple[str, int]]:
    procs = CorralProcs()
    try:
        url = start_router(procs, [start_mock(procs, "m1", "--ttft-ms", "0", "--itl-ms", "0")])
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)
    finally:
        procs.close()


def post(body: bytes, version: str = "1.1", extra: str = "") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


class Reader:
    """Reads whole HTTP/1.1 responses (Content-Length or chunked) off a socket, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        got = self.sock.recv(65536)
        self.buf += got
        return bool(got)

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            assert self._fill(), f"connection closed before {marker!r}"
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def response(self) -> tuple[bytes, bytes]:
        """(head, body) of the next response."""
        head = self.until(b"\r\n\r\n")
        lines = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
        }
        if lines.get(b"transfer-encoding") == b"chunked":
            return head, self.until(b"\r\n0\r\n\r\n")
        n = int(lines[b"content-length"])
        while len(self.buf) < n:
            assert self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return head, body

    def rest(self) -> bytes:
        """Everything until the peer closes."""
        while self._fill():
            pass
        return self.buf


def test_keep_alive_and_pipelined_requests_answer_in_order(router: tuple[str, int]) -> None:
    with socket.create_connection(router, timeout=30) as s:
        r = Reader(s)
        s.sendall(post(BODY % b"", extra="X-Request-ID: first\r\n"))
        head, body = r.response()
        assert head.startswith(b"HTTP/1.1 200") and b"first" in head and b'"usage"' in body
        stream = post(BODY % b', "stream": true', extra="X-Request-ID: second\r\n")
        plain = post(BODY % b"", extra="X-Request-ID: third\r\n")
        s.sendall(stream + plain)  # pipelined: the stream must end before the third answer starts
        head, body = r.response()
        assert b"second" in head and b"text/event-stream" in head and b"data: [DONE]" in body
        head, body = r.response()
        assert head.startswith(b"HTTP/1.1 200") and b"third" in head and b'"usage"' in body


def test_http10_stream_ends_with_the_connection(router: tuple[str, int]) -> None:
    with socket.create_connection(router, timeout=30) as s:
        s.sendall(post(BODY % b', "stream": true', version="1.0"))
        data = Reader(s).rest()  # until the router closes
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    assert body.rstrip().endswith(b"data: [DONE]")


def test_expect_100_continue_and_unknown_route(router: tuple[str, int]) -> None:
    body = BODY % b""
    with socket.create_connection(router, timeout=30) as s:
        r = Reader(s)
        s.sendall(post(body, extra="Expect: 100-continue\r\n")[: -len(body)])
        assert r.until(b"\r\n\r\n").startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        head, answer = r.response()
        assert head.startswith(b"HTTP/1.1 200") and b'"usage"' in answer
        s.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        head, answer = r.response()
        assert head.startswith(b"HTTP/1.1 404") and b'"error"' in answer
        assert b"\r\nx-request-id: " in head.lower()  # generated: the client sent none
