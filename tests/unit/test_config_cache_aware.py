"""[router.cache_aware]: the policy's constants, validated with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.config import load_plan
from corral.config.cache_aware import CacheAwareSettings
from corral.errors import ConfigError
from corral.router import policies
from corral.router.config import load_settings
from corral.router.policies import cache_aware

CORRAL_TOML = """
[registry]
port = 28000
[router]
port = 28800
policy = "cache_aware"
[dashboard]
port = 28080
"""


def _router_file(tmp_path: Path, table: str) -> str:
    path = tmp_path / "router.toml"
    path.write_text('[router]\npolicy = "cache_aware"\n[router.cache_aware]\n' + table)
    return str(path)


def test_defaults_are_the_measured_constants() -> None:
    s = load_settings(None, {}).cache_aware
    assert s == CacheAwareSettings()
    assert (s.load_gap, s.speed_slack, s.home_match, s.home_load_rel, s.home_load_abs) == (5, 0.25, 0.5, 2, 8)
    assert (s.owners, s.small_fleet, s.tree_blocks) == (8, 8, 1 << 17)


def test_a_table_sets_them_and_the_policy_takes_them(tmp_path: Path) -> None:
    settings = load_settings(_router_file(tmp_path, "load_gap = 2.5\ntree_blocks = 4096\n"), {})
    assert settings.cache_aware.load_gap == 2.5
    old = cache_aware.params
    try:
        policies.load("cache_aware", settings)
        assert cache_aware.params.load_gap == 2.5 and cache_aware.tree.max_blocks == 4096
    finally:
        cache_aware.configure(old)


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        ("load_gap = -1\n", "router.cache_aware.load_gap", "greater than or equal to 0"),
        ("home_match = 1.5\n", "router.cache_aware.home_match", "less than or equal to 1"),
        ("home_load_rel = 0.5\n", "router.cache_aware.home_load_rel", "greater than or equal to 1"),
        ("owners = 0\n", "router.cache_aware.owners", "greater than or equal to 1"),
        ('speed_slack = "fast"\n', "router.cache_aware.speed_slack", "valid number"),
        ("miss_wieght = 3\n", "router.cache_aware.miss_wieght", "Extra inputs are not permitted"),
    ],
)
def test_a_bad_value_names_file_field_and_problem(tmp_path: Path, table: str, field: str, words: str) -> None:
    path = _router_file(tmp_path, table)
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    msg = str(info.value)
    assert msg.startswith(path) and field in msg and words in msg and "\n" not in msg


def test_corral_toml_checks_the_table_when_it_loads(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text(CORRAL_TOML + "[router.cache_aware]\nload_gap = -3\n")
    with pytest.raises(ConfigError) as info:
        load_plan(str(path))
    assert str(info.value).startswith(str(path)) and "router.cache_aware.load_gap" in str(info.value)
