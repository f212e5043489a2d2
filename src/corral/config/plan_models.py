"""What the launcher runs: one :class:`ProcessPlan` per process, gathered in a :class:`Plan`.

Data only; :mod:`corral.config.plan` computes them from the config.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from corral.config.models import Dependency
from corral.settings import Probe, RestartPolicy, SitterSettings

Kind = Literal["registry", "router", "sitter", "service"]


class ProcessPlan(BaseModel):
    """One process the launcher will supervise."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Kind
    group: str
    entry: str  # the config entry it comes from ("chat" for chat-0)
    source: str  # field path of that entry ("backend[0]")
    replica: int = 0
    argv: list[str]
    env: dict[str, str] = {}
    cwd: str | None = None
    ports: dict[str, int] = {}
    url: str | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None
    depends_on: list[Dependency] = []
    gpus: list[int] = []
    models: list[str] = []
    tags: list[str] = []
    auto_start: bool = True
    openai: bool = False
    restart: RestartPolicy = RestartPolicy()
    stop_grace_s: float = 10
    drain_timeout_s: float = 30  # a rolling restart waits this long for in-flight requests
    start_timeout_s: float = 600
    settle_s: float = 1.0  # without readiness: healthy once up this long (0: at spawn)
    files: dict[str, str] = {}  # written (mode 0600) before the process starts: path -> text
    token: str | None = None  # bearer token of this process's admin/write routes (never on argv)
    gpu_error: str | None = None  # placement refused this replica: it fails with this reason
    sitter: SitterSettings | None = None  # a sitter's settings (argv names their file, in `files`)
    # On-demand models (launcher/ondemand.py): started by the router's first request, unloaded idle.
    start: Literal["always", "on_demand"] = "always"
    keep_warm: int = 0
    idle_unload_s: float | None = None
    cold_start_timeout_s: float = 600
    gpu_memory_gb: float | None = None


class Plan(BaseModel):
    """Everything ``corral up`` runs, in start order."""

    model_config = ConfigDict(frozen=True)

    config_file: str
    state_dir: Path
    host: str
    dashboard_port: int
    token: str | None
    registry_url: str | None  # one URL, or several (``a,b``) on a worker host
    router_url: str | None
    processes: list[ProcessPlan]
    registry_token: str | None = None  # for the launcher's own registry calls
    ca: str | None = None  # PEM CA bundle for an https registry
    tls: bool = False  # the registry, router and sitter APIs started here serve HTTPS
    gpu_free: dict[int, int | None] = {}  # the inventory placement saw (free bytes, None = unknown)

    @property
    def scheme(self) -> str:
        """``https`` when the servers started here serve TLS, else ``http``."""
        return "https" if self.tls else "http"

    def client_ssl(self) -> ssl.SSLContext | None:
        """The context the launcher's own clients verify its servers (and the registry) with."""
        return _client_ssl(self.ca)

    def get(self, name: str) -> ProcessPlan | None:
        """The process called ``name``, or None."""
        return next((p for p in self.processes if p.name == name), None)

    def groups(self) -> dict[str, list[str]]:
        """Group name -> process names."""
        out: dict[str, list[str]] = {}
        for p in self.processes:
            out.setdefault(p.group, []).append(p.name)
        return out

    def levels(self) -> dict[str, int]:
        """Dependency depth of each process (0 = depends on nothing); stop runs deepest first."""
        level: dict[str, int] = {}
        for p in self.processes:  # already in start order
            level[p.name] = 1 + max((level.get(d.name, -1) for d in p.depends_on), default=-1)
        return level


@functools.lru_cache(maxsize=4)
def _client_ssl(ca: str | None) -> ssl.SSLContext | None:
    from corral.tls import client_context

    return client_context(ca, flag="corral.ca")
