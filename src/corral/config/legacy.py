"""The older ``services.json`` format, converted into ``[[service]]`` entries.

``{"backend_services": [{id, name, module, default_port, port_env, health_endpoint,
depends_on, enabled, auto_start, tags, provides}]}``: each entry runs as
``python -m uvicorn MODULE --host H --port P`` in the file's directory.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corral.config.models import Port


class LegacyService(BaseModel):
    """One ``backend_services`` entry; unknown keys are ignored (the files were written for another tool)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str | None = None
    module: str
    default_port: Port
    port_env: str | None = None
    health_endpoint: str = "/health"
    depends_on: list[str] = []
    enabled: bool = True
    auto_start: bool = True
    tags: list[str] = []
    provides: list[str] = Field(default_factory=list)


class LegacyFile(BaseModel):
    """A whole ``services.json``."""

    model_config = ConfigDict(extra="ignore")

    backend_services: list[LegacyService]


def to_config_data(legacy: LegacyFile, env: Mapping[str, str], base_dir: Path, host: str) -> dict[str, Any]:
    """The ``corral.toml`` data equivalent to a ``services.json``."""
    services = []
    for s in legacy.backend_services:
        port = int(env[s.port_env]) if s.port_env and env.get(s.port_env, "").isdigit() else s.default_port
        path = s.health_endpoint if s.health_endpoint.startswith("/") else f"/{s.health_endpoint}"
        services.append(
            {
                "name": s.id,
                "command": [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    s.module,
                    "--host",
                    "{host}",
                    "--port",
                    "{port}",
                ],
                "cwd": str(base_dir),
                "port": port,
                "health": f"http://{{host}}:{{port}}{path}",
                "depends_on": list(s.depends_on),
                "enabled": s.enabled,
                "auto_start": s.auto_start,
                "tags": [*s.tags, *(f"provides:{x}" for x in s.provides)],
            }
        )
    # A services.json describes only the application's own services: no registry, no router.
    return {
        "corral": {"host": host},
        "registry": {"enabled": False},
        "router": {"enabled": False},
        "service": services,
    }
