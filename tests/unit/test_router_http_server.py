"""corral.router.http.Server in-process, over real 127.0.0.1 sockets: limits, errors, idle close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from corral.httpserver import Limits
from corral.router.http import Connection, Handler, Reply, Request, Server
from support import free_port


async def ok(req: Request, conn: Connection) -> Reply:
    return Reply(200, b'{"len": %d}' % len(req.body))


async def boom(req: Request, conn: Connection) -> Reply:
    raise RuntimeError("handler bug")


def dispatch(req: Request) -> Handler | None:
    return {"/ok": ok, "/boom": boom}.get(req.path)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, int]]:
    port = free_port()
    srv = Server(dispatch, lambda: "gen-1", Limits(max_body=1000, keepalive=0.25))
    await srv.start("127.0.0.1", port)
    yield srv, port
    await srv.close()


async def exchange(port: int, raw: bytes) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length), reader, writer


async def test_body_limit_is_413_and_the_connection_closes(server: tuple[Server, int]) -> None:
    _, port = server
    body = b"x" * 1001
    raw = b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    answer, reader, writer = await exchange(port, raw)
    assert answer.startswith(b"HTTP/1.1 413") and b"request_too_large" in answer
    assert b"X-Request-ID: gen-1" in answer
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_handler_bug_is_a_json_500(server: tuple[Server, int]) -> None:
    _, port = server
    answer, _, writer = await exchange(port, b"POST /boom HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500") and b'"error"' in answer
    writer.close()


async def test_idle_keep_alive_connection_is_closed(server: tuple[Server, int]) -> None:
    srv, port = server
    raw = b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    answer, reader, writer = await exchange(port, raw)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"len": 3}')
    assert len(srv.connections) == 1
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the sweeper closed it
    writer.close()
