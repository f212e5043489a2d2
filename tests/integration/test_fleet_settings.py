"""One source of settings, with real processes: a sitter gets its settings as a private file,
never as flags, so a backend's secret environment is on no command line and in no log; a bad
probe is refused by `corral config check` naming the field."""

from __future__ import annotations

import stat
from pathlib import Path

import psutil
from launcher_helpers import Stack, corral

from support import free_port

SECRET = "s3cr3t-backend-value"


def test_bad_health_url_is_refused_by_config_check_naming_the_field(tmp_path: Path) -> None:
    f = tmp_path / "corral.toml"
    f.write_text('[[service]]\nname = "web"\ncommand = ["x"]\nport = 9\nhealth = "http:///health"\n')
    r = corral("config", "check", "-c", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "service[0].health" in r.stderr and "full http(s) URL" in r.stderr, r.stderr


def test_backend_env_reaches_the_backend_through_a_private_file_not_argv(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    body = f"""
[registry]
enabled = false
[router]
enabled = false

[[backend]]
name = "chat"
preset = "mock"
models = ["m"]
port = {free_port()}
env = {{ MOCK_SECRET = "{SECRET}" }}
"""
    s = Stack(tmp_path, body)
    stacks.append(s)
    s.up()
    sitter = psutil.Process(s.services()["chat-0"]["sitter"]["pid"])  # the row shows the backend
    argv = sitter.cmdline()
    assert argv[-2] == "--settings" and "--env" not in argv
    settings = Path(argv[-1])
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600 and SECRET in settings.read_text()
    backend = next(c for c in sitter.children(recursive=True) if "mock" in " ".join(c.cmdline()))
    assert backend.environ().get("MOCK_SECRET") == SECRET  # it did reach the backend
    launcher = psutil.Process(s.launcher_pid())
    for p in [launcher, *launcher.children(recursive=True)]:
        assert SECRET not in " ".join(p.cmdline()), p.cmdline()
    for log in s.state.rglob("*.log"):
        assert SECRET not in log.read_text(errors="replace"), log
    assert s.run("down").returncode == 0
