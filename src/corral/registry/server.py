"""Running the registry: uvicorn on one loop, watch streams ended promptly on shutdown."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import FrameType

import uvicorn

from corral.registry.app import create_app
from corral.registry.events import DEFAULT_HISTORY
from corral.registry.store import MemoryStore, Store

log = logging.getLogger("corral.registry")


class _Server(uvicorn.Server):
    """Ends the endless watch streams at the first signal, so shutdown needs no grace timeout."""

    def __init__(self, config: uvicorn.Config, store: Store) -> None:
        super().__init__(config)
        self._store = store
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._store.close_watchers)


def make_store(store_url: str, state_dir: Path | None, history: int = DEFAULT_HISTORY) -> Store:
    """The store named by ``store_url``: ``memory`` or ``redis://host:port/db[?prefix=P]``."""
    if store_url.startswith(("redis://", "rediss://", "unix://")):
        from corral.registry.redis_store import RedisStore

        if state_dir is not None:
            log.info("state dir %s unused: the Redis store keeps the state in Redis", state_dir)
        return RedisStore(store_url, history=history)
    if store_url != "memory":
        from corral.errors import ConfigError

        raise ConfigError(
            f"unsupported store {store_url!r} (use 'memory' or 'redis://host:port/db')", field="store"
        )
    return MemoryStore(state_dir=state_dir, history=history)


def serve(
    host: str = "127.0.0.1",
    port: int = 18000,
    token: str | None = None,
    state_dir: Path | None = None,
    store_url: str = "memory",
    log_level: str = "info",
    history: int = DEFAULT_HISTORY,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> None:
    """Serve the registry until SIGINT/SIGTERM, then write the snapshot and exit."""
    from corral.tls import scheme, server_context

    server_context(tls_cert, tls_key)  # a clear error for a bad pair before anything starts
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = make_store(store_url, state_dir, history)
    if store_url != "memory":
        from corral.registry.redis_store import check_reachable, redacted

        check_reachable(store_url)  # a clear one-line error instead of a failed lifespan
        store_url = redacted(store_url)  # logged below: no password
    app = create_app(store, token)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # a line per heartbeat would cost more than the heartbeat
        timeout_graceful_shutdown=3,
        lifespan="on",
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )
    log.info(
        "registry on %s://%s:%d (store %s, state dir %s, auth %s)",
        scheme(bool(tls_cert)),
        host,
        port,
        store_url,
        state_dir or "none",
        "on" if token else "off",
    )
    _Server(config, store).run()
