"""Restart safety: the backend starts again only once its old processes let go of its GPUs.

Given to the Supervisor as ``before_restart``: with the old tree's PIDs (the root, the leader of
its own process group, first) it waits, via :func:`corral.gpu.wait_for_release`, until none of
them holds memory on the sitter's GPUs, SIGKILLing survivors of that process group (never a
foreign process). Past the timeout the restart is vetoed and the backend is ``failed`` with a
reason naming the GPU, the memory and the PID.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("corral.sitter")


class GpuGate:
    """``before_restart`` for a backend on ``gpus``; remembers the last wait for ``/info``."""

    def __init__(self, gpus: list[int], timeout_s: float) -> None:
        self.gpus = list(gpus)
        self.timeout_s = timeout_s
        self.waiting_since: float | None = None  # time.time() while a wait is under way
        self.last: dict[str, Any] | None = None

    @property
    def last_wait_s(self) -> float | None:
        """Seconds the last restart waited for GPU memory (None: no restart yet)."""
        return self.last["wait_s"] if self.last else None

    async def __call__(self, old_pids: list[int]) -> str | None:
        """Wait for the release; a reason (vetoing the restart) when it did not happen in time."""
        from corral.gpu import wait_for_release  # only sitters with GPUs pay for the import

        self.waiting_since = time.time()
        log.info("waiting for the old backend (pids %s) to release GPUs %s", old_pids, self.gpus)
        try:
            result = await wait_for_release(
                old_pids, self.gpus, timeout_s=self.timeout_s, kill_own=old_pids[0]
            )
        finally:
            self.waiting_since = None
        self.last = {
            "wait_s": round(result.waited_s, 3),
            "ok": result.ok,
            "reason": result.reason,
            "killed": result.killed,
            "finished_at": time.time(),
        }
        killed = f"; SIGKILLed {result.killed}" if result.killed else ""
        if result.ok:
            why = f" ({result.reason})" if result.reason else ""
            log.info("GPU release wait: %.3f s%s%s", result.waited_s, why, killed)
            return None
        log.error("GPU release wait: gave up after %.1f s: %s%s", result.waited_s, result.reason, killed)
        return f"GPU memory not released within {self.timeout_s:g}s: {result.reason}"

    def status(self) -> dict[str, Any]:
        """For ``/info``: the GPUs, the timeout, the last wait, and whether one is under way."""
        return {
            "gpus": self.gpus,
            "timeout_s": self.timeout_s,
            "waiting": self.waiting_since is not None,
            "last": self.last,
        }
