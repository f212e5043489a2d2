"""Which address a sitter registers, and the refusal of loopback URLs for remote registries."""

from __future__ import annotations

import socket

import pytest

from corral.errors import ConfigError
from corral.settings.addresses import advertised_host, is_loopback, route_source
from corral.sitter.config import build_config


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.0.1.1") and is_loopback("::1")
    assert is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("10.1.2.3") and not is_loopback("192.0.2.7")


def test_advertise_host_wins_and_a_specific_bind_address_is_used_as_is() -> None:
    cfg = build_config({"port": 8100, "service_type": "mock", "host": "10.9.8.7"})
    assert advertised_host(cfg) == "10.9.8.7"
    cfg = build_config(
        {"port": 8100, "service_type": "mock", "host": "0.0.0.0", "advertise_host": "gpu-3.lan"}
    )
    assert advertised_host(cfg) == "gpu-3.lan"


def test_wildcard_bind_advertises_the_address_of_the_route_to_the_registry() -> None:
    # A loopback registry is reached from 127.0.0.1; with no remote registry the host name stands.
    assert route_source("http://127.0.0.1:18000") == "127.0.0.1"
    cfg = build_config(
        {"port": 8100, "service_type": "mock", "host": "0.0.0.0", "registry_url": "http://127.0.0.1:1"}
    )
    assert advertised_host(cfg) == socket.gethostname()


def test_loopback_url_with_a_remote_registry_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match=r"--host: .*loopback.*192\.0\.2\.1:18000.*--advertise-host"):
        build_config({"port": 8100, "service_type": "mock", "registry_url": "http://192.0.2.1:18000"})
    with pytest.raises(ConfigError, match=r"--advertise-host: .*loopback"):
        build_config(
            {
                "port": 8100,
                "service_type": "mock",
                "host": "0.0.0.0",
                "advertise_host": "127.0.0.1",
                "registry_url": "http://192.0.2.1:18000",
            }
        )
    # Loopback with a loopback registry (one machine) stays fine.
    cfg = build_config({"port": 8100, "service_type": "mock", "registry_url": "http://127.0.0.1:18000"})
    assert advertised_host(cfg) == "127.0.0.1"


def test_several_registry_urls_as_a_list_or_comma_separated() -> None:
    a, b = "http://10.0.0.1:18000", "http://10.0.0.2:18000/"
    cfg = build_config({"port": 8100, "service_type": "mock", "host": "10.0.0.9", "registry_url": f"{a},{b}"})
    assert cfg.registry_urls == [a, b.rstrip("/")]
    with pytest.raises(ConfigError, match="must be an http"):
        build_config({"port": 8100, "service_type": "mock", "registry_url": f"{a},ftp://x"})
