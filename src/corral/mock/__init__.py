"""corral.mock: an OpenAI-compatible mock inference server (``corral mock``).

In-process use (tests of other parts may embed it; prefer the real process)::

    from corral.mock import MockConfig, MockServer
    server = MockServer(MockConfig(port=0, models=("m",), itl_ms=5))
    await server.start()     # http://127.0.0.1:{server.port}
    await server.close()

``await serve(config)`` runs one until SIGINT/SIGTERM. Names load lazily so that the CLI,
which imports this package, does not pay for the server's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MockConfig": "corral.mock.config",
    "MockServer": "corral.mock.server",
    "serve": "corral.mock.server",
}

if TYPE_CHECKING:
    from corral.mock.config import MockConfig
    from corral.mock.server import MockServer, serve


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'corral.mock' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["MockConfig", "MockServer", "serve"]
