"""[[router.keys]] in corral.toml: validated with the router's schema, handed to the router's file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from corral.config import load_plan
from corral.errors import ConfigError
from corral.router.config import RouterSettings
from corral.router.keys import digest

TEXT = f"""
[registry]
port = 28000
store = "redis://127.0.0.1:6390/0"
[router]
port = 28800
keys_file = "keys.toml"
usage_log = "usage.jsonl"
[[router.keys]]
name = "team-a"
key_sha256 = "{digest("ka")}"
models = ["llama-*"]
rpm = 600
priority = 1
expires = 2027-01-01
[dashboard]
port = 28080
"""


def test_router_file_gets_keys_absolute_paths_and_the_shared_limits_store(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text(TEXT)
    router = load_plan(str(path)).get("router")
    assert router is not None
    doc = tomllib.loads(next(iter(router.files.values())))
    settings = RouterSettings.model_validate(doc["router"])
    assert settings.keys_file == str(tmp_path / "keys.toml")
    assert settings.usage_log == str(tmp_path / "usage.jsonl")
    assert settings.limits_store == "redis://127.0.0.1:6390/0"
    (key,) = settings.keys
    assert (key.name, key.models, key.rpm, key.priority) == ("team-a", ["llama-*"], 600, 1)
    assert key.expires_at() == 1798761600.0


def test_a_plain_key_in_the_config_is_refused_with_its_field(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text('[router]\n[[router.keys]]\nname = "a"\nkey = "sk-plain"\n')
    with pytest.raises(ConfigError) as info:
        load_plan(str(path))
    assert "router.keys[0]" in str(info.value) and "key_sha256" in str(info.value)
    assert "sk-plain" not in str(info.value)
