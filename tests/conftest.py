"""Shared fixtures: free loopback ports and corral processes that are always cleaned up."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from support import CorralProcs, free_port


@pytest.fixture(autouse=True, scope="session")
def _state_home() -> Iterator[None]:
    """Sitters keep state under $XDG_STATE_HOME by default: never the user's, in tests."""
    with tempfile.TemporaryDirectory(prefix="corral-xdg-") as d:
        old = os.environ.get("XDG_STATE_HOME")
        os.environ["XDG_STATE_HOME"] = d
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("XDG_STATE_HOME", None)
            else:
                os.environ["XDG_STATE_HOME"] = old


@pytest.fixture
def port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_port()


@pytest.fixture
def procs() -> Iterator[CorralProcs]:
    """Start `corral ...` subprocesses; every one (and its tree) is killed at teardown."""
    p = CorralProcs()
    try:
        yield p
    finally:
        p.close()
