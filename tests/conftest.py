"""Shared fixtures: free loopback ports and corral processes that are always cleaned up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import CorralProcs, free_port


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
