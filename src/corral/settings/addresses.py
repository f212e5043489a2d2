"""Which address a sitter publishes for its backend and itself, and when to refuse one.

Others (routers on other hosts) dial what the registry holds, so it must be an address they can
reach: ``--advertise-host`` when given; the bind address when it is a specific one; when bound to
every address, the local address of the route towards the (first) registry, which is the
interface the registry's own network reaches us on (a UDP ``connect`` picks it; no packet is
sent); without a registry, the host name. A loopback URL registered with a registry on another
host would send every router there to itself, so that is refused with the reason.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from corral.errors import ConfigError
from corral.settings.sitter import SitterSettings as SitterConfig

WILDCARDS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a literal or a name) means this machine only (127/8, ::1, localhost)."""
    host = host.strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False  # cannot tell; the registry call will say whether it resolves
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def route_source(url: str) -> str | None:
    """The local address this host uses to reach ``url``'s host (None when there is no route)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    for family, _, _, _, addr in infos:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.connect(addr)  # UDP: chooses the route and source address, sends nothing
                return str(s.getsockname()[0])
            except OSError:
                continue
    return None


def advertised_host(cfg: SitterConfig) -> str:
    """The host name or address put in the URLs the sitter registers (see the module doc)."""
    if cfg.advertise_host:
        return cfg.advertise_host
    if cfg.host not in WILDCARDS:
        return cfg.host
    for registry in cfg.registry_urls:
        if not is_loopback(urlsplit(registry).hostname or ""):
            source = route_source(registry)
            if source:
                return source
    return socket.gethostname()


def check_advertised(cfg: SitterConfig) -> None:
    """Refuse to register a loopback URL with a registry on another host, saying why."""
    if not cfg.registry_urls:
        return
    host = advertised_host(cfg)
    if not is_loopback(host):
        return
    remote = [u for u in cfg.registry_urls if not is_loopback(urlsplit(u).hostname or "")]
    if not remote:
        return
    field = "--advertise-host" if cfg.advertise_host else "--host"
    raise ConfigError(
        f"the backend would be registered as http://{host}:{cfg.port}, a loopback address, with the "
        f"registry at {remote[0]} on another host: routers there cannot reach it. Bind an address "
        "they can reach (--host 0.0.0.0 or this host's LAN address) or set --advertise-host",
        field=field,
    )
