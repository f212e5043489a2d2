"""A worker host: `[registry] url` elsewhere -> only this host's sitters and backends run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.config import load_plan
from corral.errors import ConfigError

WORKER = """
[corral]
host = "0.0.0.0"
advertise_host = "10.0.0.5"
ca = "/etc/corral/ca.pem"
[registry]
url = ["https://10.0.0.1:18000", "https://10.0.0.2:18000"]
token = "regsecret"
[[backend]]
name = "chat"
preset = "mock"
models = ["m"]
port = 28100
replicas = 2
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "corral.toml"
    path.write_text(text)
    return str(path)


def test_worker_host_runs_only_its_sitters_pointed_at_the_remote_registries(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, WORKER))
    assert [p.kind for p in plan.processes] == ["sitter", "sitter"]
    assert plan.registry_url == "https://10.0.0.1:18000,https://10.0.0.2:18000" and plan.router_url is None
    for p in plan.processes:
        settings = json.loads(p.files[p.argv[-1]])
        assert settings["registry_url"] == plan.registry_url
        assert settings["registry_token"] == "regsecret" and settings["ca"] == "/etc/corral/ca.pem"
        assert settings["host"] == "0.0.0.0"
        assert [d.name for d in p.depends_on] == []  # nothing local to wait for


def test_a_router_may_still_run_there_when_asked(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, WORKER + "[router]\nenabled = true\n"))
    router = plan.get("router")
    assert router is not None and plan.registry_url in " ".join(router.argv)


def test_loopback_backends_with_a_remote_registry_are_refused_naming_the_field(tmp_path: Path) -> None:
    text = WORKER.replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
    with pytest.raises(ConfigError, match=r"corral\.host: .*loopback.*10\.0\.0\.1:18000"):
        load_plan(write(tmp_path, text.replace('advertise_host = "10.0.0.5"\n', "")))
    with pytest.raises(ConfigError, match=r"corral\.advertise_host: .*loopback"):
        load_plan(write(tmp_path, WORKER.replace("10.0.0.5", "127.0.0.1")))
    plan = load_plan(write(tmp_path, text))  # loopback bind, but a reachable advertised address
    assert json.loads(plan.processes[0].files[plan.processes[0].argv[-1]])["advertise_host"] == "10.0.0.5"


def test_remote_url_and_a_local_registry_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"registry.*exclude each other"):
        load_plan(write(tmp_path, WORKER.replace("[registry]", "[registry]\nenabled = true")))
    with pytest.raises(ConfigError, match=r"registry\.url.*http"):
        load_plan(write(tmp_path, WORKER.replace("https://10.0.0.2:18000", "ftp://x")))
