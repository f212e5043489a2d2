"""TLS between hosts: server contexts from ``--tls-cert/--tls-key``, client contexts from ``--ca``.

The registry, the router and the sitter's port+1 API serve HTTPS when given a certificate and
its key; their clients (sitter -> registry, router -> registry, the launcher) verify the server
against ``--ca`` (a PEM bundle: the private CA that signed the hosts' certificates), or the
system's trust store when none is given. Certificates name the address clients dial (an IP
SAN for ``https://10.0.0.1:18000``). Errors are :class:`corral.errors.ConfigError` naming the
flag and the file: a missing or unreadable PEM is the user's mistake, never a traceback.
"""

from __future__ import annotations

import ssl

from corral.errors import ConfigError


def server_context(cert: str | None, key: str | None, *, flag: str = "--tls-cert") -> ssl.SSLContext | None:
    """A server context for ``cert`` + ``key`` (None when neither is given; both or neither)."""
    if not cert and not key:
        return None
    if not cert or not key:
        missing = "--tls-key" if cert else "--tls-cert"
        raise ConfigError("--tls-cert and --tls-key go together: give both", field=missing)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"file not found: {exc.filename}", field=flag) from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load certificate {cert} with key {key}: {exc}", field=flag) from None
    return ctx


def client_context(ca: str | None, *, flag: str = "--ca") -> ssl.SSLContext | None:
    """A client context trusting ``ca`` (None: the defaults, i.e. the system's trust store)."""
    if not ca:
        return None
    try:
        return ssl.create_default_context(cafile=ca)
    except FileNotFoundError:
        raise ConfigError(f"file not found: {ca}", field=flag) from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load CA bundle {ca}: {exc}", field=flag) from None


def scheme(tls: bool) -> str:
    """``https`` or ``http``."""
    return "https" if tls else "http"
