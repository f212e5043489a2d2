"""A sitter's identity: its default state dir is per user and per sitter (not the current
directory), and a port holder running exactly its command, owned by no live sitter, is adopted."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
from sitter_helpers import sitter_info, wait_backend_state

from corral.sitter import identity
from corral.sitter.backend import process_spec
from corral.sitter.config import build_config
from support import CorralProcs, kill_tree


def _sit(procs: CorralProcs, port: int, cwd: Path, xdg: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = ["sit", "--port", str(port), "--service-type", "mock", "--models", "m1", "--restart-delay", "0.2"]
    return procs.start(*argv, *extra, cwd=cwd, env={"XDG_STATE_HOME": str(xdg)}, log=cwd / "sitter.log")


def _kill_sitter_only(p: subprocess.Popen[bytes]) -> None:
    """SIGKILL the sitter process alone: its backend (own session) lives on, orphaned."""
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)


def test_same_sitter_from_another_directory_adopts_its_backend(
    procs: CorralProcs, tmp_path: Path, port: int
) -> None:
    """The pid file lived in ./.corral: started from elsewhere, the sitter did not find it and
    failed with "port already in use by pid N", N running exactly its own command."""
    xdg = tmp_path / "xdg"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    first = _sit(procs, port, a, xdg)
    wait_backend_state(port, "healthy", 60)
    backend = sitter_info(port)["pid"]
    try:
        assert (xdg / "corral" / "sitters" / f"mock-{port}" / f"mock-{port}.pid").is_file()
        assert not (a / ".corral").exists()
        _kill_sitter_only(first)
        _sit(procs, port, b, xdg)
        wait_backend_state(port, "healthy", 60)
        assert sitter_info(port)["pid"] == backend  # adopted, not "port already in use"
    finally:
        kill_tree(backend)  # adopted: not a descendant of the sitter procs kills


def test_a_port_holder_running_our_command_is_adopted_without_a_pid_file(
    procs: CorralProcs, tmp_path: Path, port: int
) -> None:
    first = _sit(procs, port, tmp_path, tmp_path / "xdg-1")
    wait_backend_state(port, "healthy", 60)
    backend = sitter_info(port)["pid"]
    try:
        _kill_sitter_only(first)
        _sit(procs, port, tmp_path, tmp_path / "xdg-2")  # another state dir: no pid file there
        wait_backend_state(port, "healthy", 60)
        assert sitter_info(port)["pid"] == backend
    finally:
        kill_tree(backend)


def test_a_backend_owned_by_a_live_sitter_is_not_claimed(
    procs: CorralProcs, tmp_path: Path, port: int
) -> None:
    sitter = _sit(procs, port, tmp_path, tmp_path / "xdg-1")
    wait_backend_state(port, "healthy", 60)
    backend = sitter_info(port)["pid"]
    assert identity.owner(backend) == sitter.pid
    cfg = build_config(
        {"port": port, "service_type": "mock", "models": "m1", "state_dir": str(tmp_path / "x")}
    )
    spec = process_spec(cfg)
    assert psutil.Process(backend).cmdline() == spec.argv  # the very command: only ownership differs
    assert identity.claim_port_holder(spec) is None
    assert spec.pid_file is not None and not spec.pid_file.exists()
