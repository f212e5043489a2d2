"""corral.tls: server and client contexts, and clear errors for bad certificate files."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from corral.errors import ConfigError
from corral.tls import client_context, server_context


def test_nothing_given_means_plain_http_and_system_trust() -> None:
    assert server_context(None, None) is None and client_context(None) is None


def test_cert_without_key_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--tls-key: .*go together"):
        server_context(str(tmp_path / "c.pem"), None)
    with pytest.raises(ConfigError, match=r"--tls-cert: file not found"):
        server_context(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    with pytest.raises(ConfigError, match=r"--ca: file not found"):
        client_context(str(tmp_path / "ca.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"--ca: cannot load CA bundle"):
        client_context(str(tmp_path / "junk.pem"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_a_ca_and_a_host_certificate_made_at_test_time(tmp_path: Path) -> None:
    from multihost.certs import make_ca, make_cert

    ca = make_ca(tmp_path)
    cert, key = make_cert(tmp_path, "h", "127.0.0.1")
    assert isinstance(server_context(str(cert), str(key)), ssl.SSLContext)
    ctx = client_context(str(ca))
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED
