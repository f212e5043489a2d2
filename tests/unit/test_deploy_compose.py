"""deploy/compose.yaml: services, profiles, GPU reservations, and command lines corral accepts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.config.load import load_config
from corral.config.models import DashboardSection, RegistrySection, RouterSection
from deploy_support import DEPLOY, option, parse_corral

COMPOSE = DEPLOY / "compose.yaml"
CORRAL_SERVICES = ("registry", "router", "launcher", "mock", "vllm")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", *CORRAL_SERVICES}
    profiles = {name: s.get("profiles", []) for name, s in services.items()}
    assert profiles == {
        "redis": [], "registry": [], "router": [], "launcher": [], "mock": ["mock"], "vllm": ["gpu"],
    }  # fmt: skip
    for name in CORRAL_SERVICES:
        assert services[name]["restart"] == "unless-stopped"
        assert services[name]["stop_grace_period"]


def test_corral_commands_parse_and_agree_with_defaults(compose: dict[str, Any]) -> None:
    services = compose["services"]
    commands = {name: parse_corral(services[name]["command"]) for name in CORRAL_SERVICES}
    assert {name: cmd for name, (cmd, _) in commands.items()} == {
        "registry": "registry", "router": "router", "launcher": "up", "mock": "sit", "vllm": "sit",
    }  # fmt: skip
    registry_url = f"http://registry:{RegistrySection().port}"
    assert commands["registry"][1]["port"] == RegistrySection().port
    assert commands["registry"][1]["store"].startswith("redis://redis:6379")
    assert commands["router"][1]["registry_url"] == registry_url
    for name in CORRAL_SERVICES:
        params = commands[name][1]
        if "host" in params and name != "launcher":
            assert params["host"] == "0.0.0.0", f"{name} must listen beyond the container's loopback"
        if commands[name][0] == "sit":
            assert params["registry_url"] == registry_url
    assert services["router"]["ports"] == [f"${{ROUTER_PORT:-{RouterSection().port}}}:{RouterSection().port}"]
    assert services["launcher"]["ports"] == [
        f"${{DASHBOARD_PORT:-{DashboardSection().port}}}:{DashboardSection().port}"
    ]


def test_gpu_template(compose: dict[str, Any]) -> None:
    vllm = compose["services"]["vllm"]
    assert option(vllm["command"], "--service-type") == "vllm"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # A model loads for minutes: the healthcheck's start period must not mark it unhealthy first.
    assert vllm["healthcheck"]["start_period"].endswith("m")
    assert vllm["healthcheck"]["test"][-1] == "corral.healthcheck"
    build = vllm["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()


def test_launcher_config_loads(compose: dict[str, Any]) -> None:
    mount = compose["services"]["launcher"]["volumes"][0]
    source, target, _ = mount.split(":")
    assert target == option(compose["services"]["launcher"]["command"], "-c")
    config = load_config(COMPOSE.parent / source, env={"CORRAL_DASHBOARD_TOKEN": "t"})
    assert config.corral.host == "0.0.0.0" and config.router.enabled is False
    assert config.registry.store == compose["services"]["registry"]["command"][-1]


def test_podman_compose_config() -> None:
    """``podman-compose config`` resolves the file (variables, anchors, profiles) offline."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (make image installs it)")
    env = {
        **os.environ,
        "CORRAL_DASHBOARD_TOKEN": "t",
        "CONTAINERS_CONF": str(DEPLOY / "image/containers.conf"),
    }
    cmd = [
        sys.executable,
        "-m",
        "podman_compose",
        "-f",
        str(COMPOSE),
        "--profile",
        "mock",
        "--profile",
        "gpu",
    ]
    out = subprocess.run([*cmd, "config"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) == {"redis", *CORRAL_SERVICES}
    assert resolved["services"]["router"]["image"] == "corral:dev"
    assert Path(resolved["services"]["vllm"]["build"]["context"]).name != ""
