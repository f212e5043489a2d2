"""Every command's --help keeps its bracketed text, shows no value type after a switch, and
writes defaults one way (``[default: X]``); one command's help is also run as a real process."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from corral.cli import app

_TAIL_BRACKET = re.compile(r"\[([^\]]*)\]\.?$")


# typer vendors its own click: commands and options are recognised by shape, not by class.
def _commands() -> Iterator[tuple[list[str], Any]]:
    root = typer.main.get_command(app)

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, cmd
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                if not sub.hidden:
                    yield from walk(sub, [*path, name])

    yield from walk(root, [])


COMMANDS = list(_commands())


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "corral" for p, _ in COMMANDS])
def test_help_keeps_brackets_and_shows_switches_bare(path: list[str], cmd: Any) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "<bool>" not in out, out
    assert "(default" not in out, out  # defaults are written one way: [default: X]
    rendered = _flat(out)
    for param in cmd.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        help_text = param.help or ""
        for bracket in re.findall(r"\[[^\]]*\]", help_text):
            assert _flat(bracket) in rendered, f"{param.opts}: {bracket!r} lost in:\n{out}"
        tail = _TAIL_BRACKET.search(help_text.strip())
        if tail and help_text.strip() != tail.group(0):
            # A bracket closing the help is a default: written "[default: X]", never "[X]".
            looks_like_default = not re.search(r"[ /=]", tail.group(1)) or "'" in tail.group(1)
            assert tail.group(1).startswith("default: ") or not looks_like_default, (param.opts, help_text)
        if param.is_flag and not param.count:
            line = next(ln for ln in out.splitlines() if param.opts[-1] in ln)
            assert "<" not in line.split(param.opts[-1], 1)[1].split("  ")[0], line


def test_router_help_as_a_real_process_keeps_its_defaults() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "corral", "router", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    flat = _flat(r.stdout)
    assert "Bind address [default: 127.0.0.1]." in flat and "TOML file with a [router] table." in flat
    assert "--allow-no-auth Start" in flat  # a switch: no value type after it
