"""corral.mock: an OpenAI-compatible mock inference server (``corral mock``).

In-process use (tests of other parts may embed it; prefer the real process)::

    from corral.mock import MockConfig, MockServer
    server = MockServer(MockConfig(port=0, models=("m",), itl_ms=5))
    await server.start()     # http://127.0.0.1:{server.port}
    await server.close()

``await serve(config)`` runs one until SIGINT/SIGTERM.
"""

from corral.mock.config import MockConfig
from corral.mock.server import MockServer, serve

__all__ = ["MockConfig", "MockServer", "serve"]
