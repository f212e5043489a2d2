"""The multi-host fleet, built once per module on namespaces (root only; skipped otherwise)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import HOSTS, Fleet
from lan import available, lan, wait


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    """Hosts a-d and the client; the test process moves into the client host's network."""
    reason = available()
    if reason is None and shutil.which("redis-server") is None:
        reason = "the multi-host test needs redis-server (make redis)"
    if reason is not None:
        pytest.skip(reason)
    # Not pytest's tmp_path: its retention removes it while other runs go on; logs stay here.
    logs = Path(tempfile.mkdtemp(prefix="corral-multihost-"))
    with lan(HOSTS, logs) as net:
        f = Fleet(net, logs)
        f.start_all()
        net.enter("client")
        try:
            took = wait(f.fleet_ready, 90, "both routers routing m to C and D and c to C")
            f.figures["fleet_ready_s"] = round(took, 2)
            yield f
        finally:
            net.leave()
            (logs / "figures.json").write_text(json.dumps(f.figures, indent=1))
            report = json.dumps(f.figures, indent=1)
            print(f"\nmulti-host figures ({logs}/figures.json, logs there too):\n{report}")
