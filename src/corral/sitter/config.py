"""The sitter's settings: legacy babysitter flags and TOML files, merged and validated once.

Precedence: built-in defaults < ``--config-file`` < flags. The TOML file takes the same keys as
the flags (snake or kebab case) at top level, and also the legacy babysitter layout::

    name = "vllm-1"            # top level: name, host, port, registry_url, router_url
    [babysitter]               # max_restarts, restart_delay, heartbeat_interval
    [backend]                  # type, command, args, work_dir, env, model/model_path/config_file, models
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from corral.errors import ConfigError
from corral.presets import LaunchRequest, Preset, get_preset

# Legacy `[backend]` keys that mean one of ours.
_LEGACY_KEYS = {"type": "service_type", "model": "path", "model_path": "path", "config_file": "path"}
_SECTIONS = ("babysitter", "sitter", "backend")


class SitterConfig(BaseModel):
    """Everything ``corral sit`` can be told; field names are the flags in snake case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    host: str = "127.0.0.1"
    advertise_host: str | None = None  # the address others dial (default: derived from host)
    port: int = Field(ge=1, le=65534)  # the sitter itself listens on port + 1
    service_type: str = "command"
    path: str | None = None
    command: str | None = None
    args: list[str] = []
    work_dir: str | None = None
    env: dict[str, str] = {}
    models: list[str] = []
    health_path: str | None = None
    max_concurrency: int | None = Field(None, ge=1)
    registry_url: str | None = None
    registry_token: str | None = None
    router_url: str | None = None
    router_token: str | None = None
    gpus: list[int] = []
    gpu_release_timeout: float = Field(60.0, gt=0)
    max_restarts: int = Field(10000, ge=0)
    restart_delay: float = Field(5.0, ge=0)
    heartbeat_interval: float = Field(30.0, gt=0)
    start_timeout: float | None = Field(None, gt=0)
    state_dir: str = ".corral"
    admin_token: str | None = None

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
        if isinstance(v, list | tuple):
            v = ",".join(str(u) for u in v)
        if isinstance(v, str):
            urls = [u.strip().rstrip("/") for u in v.split(",") if u.strip()]
            for u in urls:
                if not u.startswith(("http://", "https://")):
                    raise ValueError(f"must be an http(s) URL, got {u!r}")
            return ",".join(urls) or None
        return v

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
        return get_preset(self.service_type)

    def launch_request(self) -> LaunchRequest:
        """What the preset needs to build the backend's argv."""
        return LaunchRequest(
            host=self.host,
            port=self.port,
            path=self.path,
            models=tuple(self.models),
            command=self.command,
            args=tuple(self.args),
        )


def parse_env(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["K=V", ...]`` -> dict; a pair without ``=`` or with an empty key is an error."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if not sep or not key:
            raise ValueError(f"expected K=V, got {pair!r}")
        env[key] = value
    return env


def read_toml(path: str | Path) -> dict[str, Any]:
    """A sitter TOML file as flat snake-case keys (legacy sections folded in)."""
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(file)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(file)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(file)) from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS and isinstance(value, dict):
            for sub_key, sub_value in value.items():
                flat[_normal_key(sub_key, legacy=key == "backend")] = sub_value
        else:
            flat[_normal_key(key, legacy=False)] = value
    return flat


def _normal_key(key: str, *, legacy: bool) -> str:
    snake = key.replace("-", "_")
    return _LEGACY_KEYS.get(snake, snake) if legacy or snake in ("model_path", "config_file") else snake


def build_config(flags: dict[str, Any], config_file: str | None = None) -> SitterConfig:
    """Merge ``config_file`` (if any) under the flags that were given (None = not given)."""
    values: dict[str, Any] = read_toml(config_file) if config_file else {}
    values.update({k: v for k, v in flags.items() if v is not None and v != [] and v != ()})
    if "port" not in values:
        raise ConfigError("is required", file=config_file, field="--port")
    try:
        cfg = SitterConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        given_as_flag = name in flags and flags[name] is not None
        where = f"--{name.replace('_', '-')}" if given_as_flag or not config_file else name
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        message = message.removeprefix("Value error, ")
        raise ConfigError(message, file=None if given_as_flag else config_file, field=where) from None
    given = cfg.env.get("CUDA_VISIBLE_DEVICES")
    if cfg.gpus and given is not None and given != cfg.cuda_visible_devices:
        raise ConfigError(
            f"{cfg.cuda_visible_devices} conflicts with --env CUDA_VISIBLE_DEVICES={given}", field="--gpus"
        )
    cfg.preset.check(cfg.launch_request())  # e.g. vllm without --path
    from corral.sitter.addresses import check_advertised

    check_advertised(cfg)
    return cfg
