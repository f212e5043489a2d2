"""aiohttp sessions for the launcher's own calls to the servers it runs (and to the registry).

With ``[corral] tls_cert`` the registry, router and sitter APIs the launcher starts serve HTTPS;
every launcher-side client verifies them against ``[corral] ca`` (``Plan.client_ssl``), as the
sitters and the router do. One place, so no call site can forget it.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp


def session(ssl_ctx: ssl.SSLContext | None, **kw: Any) -> aiohttp.ClientSession:
    """A session verifying HTTPS against ``ssl_ctx`` (None: aiohttp's defaults, the system store)."""
    if ssl_ctx is not None:
        kw["connector"] = aiohttp.TCPConnector(ssl=ssl_ctx)
    return aiohttp.ClientSession(**kw)
