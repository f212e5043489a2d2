"""Running the mock: the listening socket, the event loop, startup delay, shutdown, GPU hold."""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import sys
import time
from typing import Any

from corral.errors import ConfigError, SpawnError
from corral.mock.app import MockApp
from corral.mock.config import MockConfig
from corral.mock.protocol import Connection, connection_factory


def bind_socket(config: MockConfig) -> socket.socket:
    """A listening TCP socket for ``config`` (``SO_REUSEPORT`` when workers share the port)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, config.port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SpawnError(f"port {config.port} on {config.host} is already in use") from None
        raise SpawnError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class MockServer:
    """One process's mock server, usable in-process::

    server = MockServer(MockConfig(port=0, models=("m",)))
    await server.start()            # server.port is the bound port
    ...
    await server.close()
    """

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.app = MockApp(config)
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._sock: socket.socket | None = None

    @property
    def stats(self) -> dict[str, Any]:
        """The ``/stats`` document of this process."""
        return self.app.stats.as_dict()

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        assert self._sock is not None, "start() first"
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        """Listen; ``/health`` turns 200 once the startup delay has passed."""
        loop = asyncio.get_running_loop()
        self._sock = bind_socket(self.config)
        # backlog as the router's (and uvicorn's, vLLM's server): with asyncio's 100, a burst of
        # 1,000 connections overflows the accept queue and the dropped SYNs come back after 1 s,
        # the router's connect timeout.
        self._server = await loop.create_server(
            connection_factory(self.app, self.connections), sock=self._sock, backlog=2048
        )
        if self.config.startup_delay_s > 0:
            loop.call_later(self.config.startup_delay_s, setattr, self.app, "ready", True)

    async def drain(self, timeout: float) -> bool:
        """Stop accepting and let requests in flight (streams too) finish, up to ``timeout`` s.

        Idle connections close at once, busy ones after their answer. Returns whether all
        finished in time (then :meth:`close` drops what is left).
        """
        if self._server is None:
            return True
        self._server.close()
        deadline = time.monotonic() + timeout
        while True:
            busy = False
            for conn in list(self.connections):
                conn._keep_alive = False  # answer what it has, then close
                if conn.task is None and not conn.queue and not conn._in_request:
                    if conn.transport is not None:
                        conn.transport.close()
                else:
                    busy = True
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Stop listening, drop every connection and cancel what is running."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await self._server.wait_closed()
        self._server = None


async def serve(config: MockConfig) -> None:
    """Serve until SIGINT/SIGTERM (or until cancelled)."""
    server = MockServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"corral mock: listening on http://{config.host}:{server.port} models={','.join(config.models)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
        await server.drain(config.drain_s)  # SIGTERM: finish what is in flight first
    finally:
        await server.close()


def hold_cuda_memory(gb: float) -> Any:
    """Allocate ``gb`` GiB on the GPU and return the tensor (keep it referenced to keep it)."""
    try:
        import torch  # heavy and optional: only for --cuda-mem-gb
    except ImportError:
        raise ConfigError("needs PyTorch (pip install torch)", field="--cuda-mem-gb") from None
    if not torch.cuda.is_available():
        raise ConfigError("no CUDA device is visible to this process", field="--cuda-mem-gb")
    try:
        return torch.zeros(int(gb * 2**30), dtype=torch.uint8, device="cuda")
    except RuntimeError as exc:  # torch reports CUDA OOM as RuntimeError (OutOfMemoryError subclasses it)
        raise ConfigError(
            f"cannot allocate {gb} GiB: {str(exc).splitlines()[0]}", field="--cuda-mem-gb"
        ) from None


def run_one(config: MockConfig) -> None:
    """Run one serving process to completion, on uvloop."""
    held = hold_cuda_memory(config.cuda_mem_gb) if config.cuda_mem_gb > 0 else None
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # uvloop has no Windows build
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(config))
    del held
