"""Control API routes that change the fleet: rolling restart and reload.

``POST /api/rolling/{target}?force=false`` restarts every replica of a backend/service (or a
process, or a group) one at a time, each drained first; answers what each replica took.
``POST /api/reload?dry_run=false`` applies the config file's changes (corral.launcher.reload).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.params import Depends

from corral.errors import ConfigError
from corral.launcher.orchestrator import Orchestrator
from corral.launcher.reload import Reloader
from corral.launcher.rolling import Rolling, RollingError, replicas_of


def rolling_of(orch: Orchestrator) -> Rolling:
    """The one Rolling of ``orch`` (made on first use; its lock serialises fleet changes)."""
    found = getattr(orch, "rolling", None)
    if found is None:
        from corral.launcher.drain import Drainer

        found = Rolling(orch, Drainer(orch.plan))
        orch.rolling = found  # type: ignore[attr-defined]
    return found


def fleet_router(orch: Orchestrator, dependencies: list[Depends]) -> APIRouter:
    """The routes, behind the control API's auth ``dependencies``."""
    api = APIRouter(prefix="/api", dependencies=dependencies)

    @api.post(
        "/rolling/{target}",
        tags=["services"],
        responses={
            404: {"description": "No process, service or group by that name"},
            409: {"description": "A single replica without --force, or another fleet change runs"},
        },
    )
    async def rolling_restart(
        target: str, force: bool = Query(False, description="Accept a gap for a single replica.")
    ) -> dict[str, Any]:
        """Restart each replica of ``target`` in turn: drain (registry ``draining``; in-flight
        requests finish, up to ``drain_timeout_s``), restart, wait healthy and routed, then the
        next. A single replica gets a surge copy on a spare port when it can (no GPUs), else
        409 unless ``force``."""
        if not replicas_of(orch, target):
            raise HTTPException(404, f"no process, service or group named {target!r}")
        try:
            steps = await rolling_of(orch).restart(target, force=force)
        except RollingError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"ok": True, "target": target, "replicas": [s.as_dict() for s in steps]}

    @api.post(
        "/reload",
        tags=["services"],
        responses={
            400: {"description": "The config file is invalid: nothing changed"},
            409: {"description": "Another fleet change runs"},
        },
    )
    async def reload(
        dry_run: bool = Query(False, description="Only say what would change."),
    ) -> dict[str, Any]:
        """Read the config file again and apply the difference: new processes start, removed ones
        are drained and stopped, changed ones replaced replica by replica, unchanged ones keep
        running. A bad config changes nothing: 400 with the file, field and problem."""
        try:
            report = await reloader_of(orch).reload(dry_run=dry_run)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
        except RollingError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"ok": not report.errors, "dry_run": dry_run, **report.as_dict()}

    return api


def reloader_of(orch: Orchestrator) -> Reloader:
    """The one Reloader of ``orch`` (shares the Rolling's lock)."""
    found = getattr(orch, "reloader", None)
    if found is None:
        found = Reloader(orch, rolling_of(orch))
        orch.reloader = found  # type: ignore[attr-defined]
    return found
