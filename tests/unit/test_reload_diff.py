"""The reload diff: by process name, only what a process would see counts as a change."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.config import load_plan
from corral.errors import ConfigError
from corral.launcher.reload import check_fixed, diff_plans

BASE = "[registry]\nport = 28000\n[router]\nport = 28800\n[dashboard]\nport = 28080\n"


def chat(replicas: int, ttft: int = 5, extra: str = "") -> str:
    return (
        f'[[backend]]\nname = "chat"\npreset = "mock"\nmodels = ["m"]\nport = 28100\nreplicas = {replicas}\n'
        f'args = ["--ttft-ms", "{ttft}"]\n{extra}'
    )


def plans(tmp_path: Path, before: str, after: str):  # type: ignore[no-untyped-def]
    tmp_path.mkdir(exist_ok=True)
    f = tmp_path / "corral.toml"  # one file, edited: as a reload sees it
    f.write_text(BASE + before)
    old = load_plan(str(f))
    f.write_text(BASE + after)
    return old, load_plan(str(f))


def test_more_replicas_adds_only_the_new_ones(tmp_path: Path) -> None:
    old, new = plans(tmp_path, chat(3), chat(5))
    d = diff_plans(old, new)
    assert (d.added, d.changed, d.removed) == (["chat-3", "chat-4"], [], [])
    assert set(d.unchanged) == {"registry", "router", "chat-0", "chat-1", "chat-2"}


def test_fewer_replicas_removes_the_last_ones(tmp_path: Path) -> None:
    d = diff_plans(*plans(tmp_path, chat(5), chat(2)))
    assert (d.added, d.changed, d.removed) == ([], [], ["chat-2", "chat-3", "chat-4"])


def test_changed_args_name_the_sitter_field_and_soft_fields_do_not_count(tmp_path: Path) -> None:
    d = diff_plans(*plans(tmp_path, chat(2), chat(2, ttft=9, extra="drain_timeout_s = 5\n")))
    assert d.changed == ["chat-0", "chat-1"] and d.changes["chat-0"] == ["sitter.args"]
    d = diff_plans(*plans(tmp_path / "x", chat(2), chat(2, extra="drain_timeout_s = 5\n")))
    assert d.empty


def test_moving_the_router_is_refused(tmp_path: Path) -> None:
    old, new = plans(tmp_path, chat(1), chat(1))
    moved = new.model_copy(update={"router_url": "http://127.0.0.1:1"})
    with pytest.raises(ConfigError, match=r"router\.port"):
        check_fixed(old, moved)
