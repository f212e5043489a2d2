"""What one sitter is told: the launcher's plan builds it, a private file carries it, and
``corral sit``'s flags are derived from its fields (corral.settings.cli).

Field metadata (``json_schema_extra``) that the CLI reads: ``flags`` (extra spellings, e.g. the
legacy babysitter's ``--registry``), ``envvar`` (secrets are better given this way than on argv)
and ``cli`` (``"shlex"``: one string split like a shell; ``"csv"``: ``a,b``; ``"pairs"``:
repeatable ``K=V``). The help text is the field's description.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.settings.generation_probe import GenerationProbe

if TYPE_CHECKING:
    from corral.presets import LaunchRequest, Preset

SERVICE_TYPES = "command, vllm, sglang, llama.cpp, mock, InfiniLM, InfiniLM-Rust"


def _cli(**extra: Any) -> dict[str, Any]:
    return extra


class SitterSettings(BaseModel):
    """Everything ``corral sit`` can be told; field names are the flags in snake case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None, description="Service name [default: TYPE-PORT].", json_schema_extra=_cli(flags=["-n"])
    )
    host: str = Field("127.0.0.1", description="Address the backend and the sitter bind.")
    advertise_host: str | None = Field(
        None,
        description="Address routers on other hosts dial [default: the bind address; bound to 0.0.0.0:"
        " the address of the route to the registry].",
    )
    port: int = Field(
        ge=1,
        le=65534,
        description="Backend port; the sitter serves on port + 1.",
        json_schema_extra=_cli(flags=["-p"]),
    )
    service_type: str = Field("command", description=f"One of {SERVICE_TYPES}.")
    path: str | None = Field(None, description="Model path (InfiniLM-Rust: its config file).")
    command: str | None = Field(None, description="Command line for --service-type command (shlex-split).")
    args: list[str] = Field(
        [],
        description='Extra backend arguments, shlex-split: --args "--x 1".',
        json_schema_extra=_cli(cli="shlex"),
    )
    work_dir: str | None = Field(None, description="Working directory of the backend.")
    env: dict[str, str] = Field(
        {},
        description="K=V for the backend (repeatable). Values may be secrets: prefer --settings.",
        json_schema_extra=_cli(cli="pairs"),
    )
    models: list[str] = Field(
        [],
        description="Served model names a,b (the first is the engine's alias).",
        json_schema_extra=_cli(cli="csv"),
    )
    health_path: str | None = Field(
        None, description="Readiness path on the backend [default: the preset's]."
    )
    max_concurrency: int | None = Field(None, ge=1, description="Published for routers (requests at once).")
    registry_url: str | None = Field(
        None,
        description="Registry to join; several sharing one Redis: a,b (tried in order).",
        json_schema_extra=_cli(flags=["--registry"]),
    )
    registry_token: str | None = Field(
        None,
        description="Bearer token for registry writes.",
        json_schema_extra=_cli(envvar="CORRAL_REGISTRY_TOKEN"),
    )
    router_url: str | None = Field(
        None,
        description="Router told add_worker/remove_worker directly.",
        json_schema_extra=_cli(flags=["--router"]),
    )
    router_token: str | None = Field(
        None,
        description="Bearer token for the router's admin routes.",
        json_schema_extra=_cli(envvar="CORRAL_ROUTER_TOKEN"),
    )
    gpus: list[int] = Field(
        [],
        description="GPU indices for the backend, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES).",
        json_schema_extra=_cli(cli="csv"),
    )
    gpu_release_timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for the old backend's GPU memory before a restart."
    )
    max_restarts: int = Field(10000, ge=0, description="Restarts before giving up.")
    restart_delay: float = Field(5.0, ge=0, description="Seconds between a crash and the restart.")
    max_failed_starts: int = Field(
        5,
        ge=1,
        description="Starts in a row that never became ready before the backend is failed (a crash"
        " loop, whatever --max-restarts says).",
    )
    heartbeat_interval: float = Field(30.0, gt=0, description="Registry heartbeat seconds; lease 3x.")
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM, after leaving the registry: wait up to this long for the engine's"
        " running and queued requests (from its /metrics) to finish before stopping it (0: stop at once).",
    )
    park: bool = Field(
        False,
        description="Start with the backend stopped (parked) until POST /start: an on-demand model's"
        " replica, woken by its first request.",
    )
    start_timeout: float | None = Field(
        None, gt=0, description="Seconds to become ready [default: the preset's]."
    )
    state_dir: str | None = Field(
        None,
        description="Pid file and backend log directory [default: $XDG_STATE_HOME/corral/sitters/NAME-PORT].",
    )
    service: str | None = Field(
        None, description="The service label on the sitter's /metrics [default: the name]."
    )
    replica: int = Field(0, ge=0, description="The replica label on the sitter's /metrics.")
    admin_token: str | None = Field(
        None,
        description="Bearer token for POST /start /stop /restart.",
        json_schema_extra=_cli(envvar="CORRAL_SITTER_ADMIN_TOKEN"),
    )
    tls_cert: str | None = Field(None, description="PEM certificate: the port+1 API serves HTTPS.")
    tls_key: str | None = Field(None, description="PEM private key of --tls-cert.")
    ca: str | None = Field(None, description="PEM CA bundle to verify an https registry/router with.")
    generation_probe: GenerationProbe = Field(
        default_factory=GenerationProbe,
        description="The scheduled 1-token completion (settings file or [generation_probe] table only).",
        json_schema_extra=_cli(cli="file"),
    )

    @field_validator("args", mode="before")
    @classmethod
    def _split_args(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return shlex.split(v)
            except ValueError as exc:
                raise ValueError(f"cannot split {v!r}: {exc}") from None
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env_pairs(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return parse_env(v)
        if isinstance(v, dict):
            return {str(k): str(val) for k, val in v.items()}
        return v

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [m.strip() for m in v.split(",") if m.strip()]
        return v

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return [v]
        if isinstance(v, str):
            parts = [p.strip() for p in v.split(",") if p.strip()]
            if not all(p.isdigit() for p in parts):
                raise ValueError(f"expected GPU indices such as 0,1, got {v!r}")
            return [int(p) for p in parts]
        return v

    @field_validator("gpus")
    @classmethod
    def _distinct_gpus(cls, v: list[int]) -> list[int]:
        if any(i < 0 for i in v) or len(set(v)) != len(v):
            raise ValueError(f"expected distinct GPU indices >= 0, got {v}")
        return v

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"must start with '/', got {v!r}")
        return v

    @field_validator("registry_url", mode="before")
    @classmethod
    def _registry_urls(cls, v: Any) -> Any:
        """Several registries (sharing one Redis) as a list or ``a,b``; kept as ``a,b``."""
        from corral.settings.urls import url_list

        return url_list(v)

    @field_validator("router_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v.rstrip("/") if v else v

    @property
    def registry_urls(self) -> list[str]:
        """``registry_url`` as a list (several registries sharing one Redis fail over in order)."""
        return self.registry_url.split(",") if self.registry_url else []

    @property
    def sitter_port(self) -> int:
        """The sitter's own HTTP port."""
        return self.port + 1

    @property
    def cuda_visible_devices(self) -> str | None:
        """``--gpus`` as CUDA_VISIBLE_DEVICES (``0,1``), or None when no GPUs are assigned."""
        return ",".join(map(str, self.gpus)) if self.gpus else None

    @property
    def service_name(self) -> str:
        """``--name``, else ``<service-type>-<port>``."""
        return self.name or f"{re.sub(r'[^A-Za-z0-9._-]', '-', self.service_type.lower())}-{self.port}"

    @property
    def preset(self) -> Preset:
        """The engine preset for ``service_type``."""
        from corral.presets import get_preset

        return get_preset(self.service_type)

    def launch_request(self) -> LaunchRequest:
        """What the preset needs to build the backend's argv."""
        from corral.presets import LaunchRequest

        return LaunchRequest(
            host=self.host,
            port=self.port,
            path=self.path,
            models=tuple(self.models),
            command=self.command,
            args=tuple(self.args),
        )

    def file_text(self) -> str:
        """The settings as the file ``corral sit --settings`` reads (JSON; holds secrets: 0600)."""
        return self.model_dump_json(exclude_defaults=True, indent=1) + "\n"

    def digest(self) -> str:
        """A short hash of the settings: part of the file name, so a sitter's argv (its identity
        for adoption) changes exactly when its settings do."""
        return hashlib.sha256(self.file_text().encode()).hexdigest()[:12]


def parse_env(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["K=V", ...]`` -> dict; a pair without ``=`` or with an empty key is an error."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if not sep or not key:
            raise ValueError(f"expected K=V, got {pair!r}")
        env[key] = value
    return env
