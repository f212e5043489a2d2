"""Fixtures of the real-model tests (``make e2e-real``): the installed extra and a running fleet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from llamacpp_fleet import Fleet, assemble_model, check_install, make_fleet

from support import kill_tree


@pytest.fixture(scope="session")
def installed() -> None:
    """Fail (never skip) when llama-cpp-python's server or the GGUF package is missing."""
    problem = check_install()
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="module")
def fleet(installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """``examples/llamacpp.toml`` up on free ports from a scratch dir; down (and no survivor) after."""
    base: Path = tmp_path_factory.mktemp("llamacpp")
    assemble_model(base)
    f = make_fleet(base)
    try:
        up = f.up(timeout=300)
        assert up.returncode == 0, f"corral up -d failed:\n{up.stdout}\n{up.stderr}"
        yield f
    finally:
        f.down()
        for p in f.processes():  # a test failed before `corral down` was checked: leave nothing
            kill_tree(p.pid)
