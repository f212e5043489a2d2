"""deploy/systemd: units systemd accepts (``systemd-analyze verify``), running commands corral accepts."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corral.config.models import RegistrySection, RouterSection
from corral.sitter.config import build_config
from deploy_support import DEPLOY, parse_corral

UNITS = DEPLOY / "systemd"
CORRAL = "/opt/corral/bin/corral"
INSTANCE = "qwen"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def _argv(name: str) -> list[str]:
    exec_start = _unit(name)["Service"]["ExecStart"].replace("%i", INSTANCE)
    argv = shlex.split(exec_start)
    assert argv[0] == CORRAL, f"{name}: ExecStart must run {CORRAL}"
    return argv[1:]


def test_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: the systemd package)")
    # verify insists that ExecStart exists: point it at this checkout's corral, nothing else changes.
    here = str(Path(sys.executable).parent / "corral")
    units = []
    for src in sorted(UNITS.glob("*.service")):
        dst = tmp_path / src.name.replace("@.", f"@{INSTANCE}.")
        dst.write_text(src.read_text().replace(CORRAL, here))
        units.append(str(dst))
    assert len(units) == 3
    out = subprocess.run(
        [analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60, check=False
    )
    lines = (out.stdout + out.stderr).splitlines()
    ours = [line for line in lines if str(tmp_path) in line or "corral" in line]
    # Unknown keys and bad values are only warnings (exit 0): any line about our units fails.
    assert out.returncode == 0 and not ours, out.stdout + out.stderr


def test_commands_and_ports_agree_with_corral() -> None:
    cmd, params = parse_corral(_argv("corral-registry.service"))
    assert cmd == "registry" and params["port"] == RegistrySection().port
    cmd, params = parse_corral(_argv("corral-router.service"))
    assert cmd == "router" and params["port"] == RouterSection().port
    assert params["registry_url"] == f"http://127.0.0.1:{RegistrySection().port}"
    cmd, params = parse_corral(_argv("corral-sitter@.service"))
    assert cmd == "sit" and params["name"] == INSTANCE
    assert params["config_file"] == f"/etc/corral/sitters/{INSTANCE}.toml"


def test_restart_kill_mode_and_hardening() -> None:
    for name in ("corral-registry.service", "corral-router.service", "corral-sitter@.service"):
        service = _unit(name)["Service"]
        assert service["Restart"] == "always" and service["User"] == "corral", name
        assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict", name
        assert service["CapabilityBoundingSet"] == "", name
        assert "TimeoutStopSec" in service
    sitter = _unit("corral-sitter@.service")["Service"]
    # A sitter that dies must leave its engine for the next sitter to adopt (PID file identity).
    assert sitter["KillMode"] == "process"
    assert "PrivateDevices" not in sitter and "MemoryDenyWriteExecute" not in sitter  # GPUs, JIT


def test_sitter_example_settings_load() -> None:
    cfg = build_config({"name": INSTANCE}, str(UNITS / "qwen.toml.example"))
    assert cfg.service_type == "vllm" and cfg.gpus == [0] and cfg.port == 8200
