"""The image's HEALTHCHECK guesses each role's health URL from PID 1's command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from corral import healthcheck
from corral.config.models import DashboardSection, RegistrySection, RouterSection
from corral.healthcheck import ROLES, health_url
from support import free_port, wait_http


def test_defaults_are_corrals_own() -> None:
    from corral.mock.config import MockConfig

    assert ROLES["router"][0] == RouterSection().port
    assert ROLES["registry"][0] == RegistrySection().port
    assert ROLES["up"][0] == DashboardSection().port
    assert ROLES["mock"][0] == MockConfig().port


@pytest.mark.parametrize(
    ("argv", "url"),
    [
        (["/opt/corral/bin/python", "/opt/corral/bin/corral", "router", "--host", "0.0.0.0"],
         "http://127.0.0.1:8000/health"),
        (["corral", "router", "--port=9000", "--host", "10.1.2.3"], "http://10.1.2.3:9000/health"),
        (["corral", "registry"], "http://127.0.0.1:18000/health"),
        (["corral", "sit", "-p", "8200", "--service-type", "vllm"], "http://127.0.0.1:8201/health"),
        (["corral", "sit", "--port", "8200", "--host", "::"], "http://127.0.0.1:8201/health"),
        (["corral", "up", "-c", "corral.toml"], "http://127.0.0.1:8080/api/health"),
        (["corral", "mock", "--port", "8300", "--host", "fd00::1"], "http://[fd00::1]:8300/health"),
        (["corral", "sit", "--service-type", "mock"], None),  # no port: cannot guess
        (["corral", "router", "--port", "x"], None),
        (["python3", "-m", "http.server"], None),
    ],
)  # fmt: skip
def test_health_url_from_command_line(argv: list[str], url: str | None) -> None:
    assert health_url(argv) == url


def test_exit_status_follows_the_probe() -> None:
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "corral"), "mock", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=30)
        env = {"CORRAL_HEALTH_URL": f"http://127.0.0.1:{port}/health"}
        ok = subprocess.run([sys.executable, "-m", healthcheck.__name__], env=env, check=False)
        assert ok.returncode == 0
        env = {"CORRAL_HEALTH_URL": f"http://127.0.0.1:{port}/nothing-here"}
        bad = subprocess.run(
            [sys.executable, "-m", healthcheck.__name__], env=env, capture_output=True, text=True, check=False
        )
        assert bad.returncode == 1 and "404" in bad.stderr
    finally:
        server.terminate()
        server.wait(10)
