"""The sitter's settings: legacy babysitter flags and TOML files, merged and validated once.

Precedence: built-in defaults < ``--config-file`` < ``--settings`` < flags. ``--settings`` is the
JSON file the launcher writes (mode 0600: it holds the backend's environment, which may hold
secrets). The TOML file takes the same keys as the flags (snake or kebab case) at top level, and
also the legacy babysitter layout::

    name = "vllm-1"            # top level: name, host, port, registry_url, router_url
    [babysitter]               # max_restarts, restart_delay, heartbeat_interval
    [backend]                  # type, command, args, work_dir, env, model/model_path/config_file, models
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from corral.errors import ConfigError
from corral.settings.sitter import SitterSettings, parse_env

# The one model of a sitter's settings (corral.settings); the old name stays for callers.
SitterConfig = SitterSettings
__all__ = ["SitterConfig", "SitterSettings", "build_config", "parse_env", "read_settings", "read_toml"]

# Legacy `[backend]` keys that mean one of ours.
_LEGACY_KEYS = {"type": "service_type", "model": "path", "model_path": "path", "config_file": "path"}
_SECTIONS = ("babysitter", "sitter", "backend")


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


def read_settings(path: str | Path) -> dict[str, Any]:
    """The launcher's settings file (a JSON object of SitterSettings fields)."""
    file = Path(path)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(file)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(file)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid JSON: {exc}", file=str(file)) from None
    if not isinstance(raw, dict):
        raise ConfigError("expected a JSON object of sitter settings", file=str(file))
    return raw


def build_config(
    flags: dict[str, Any], config_file: str | None = None, settings_file: str | None = None
) -> SitterSettings:
    """Merge ``config_file`` and ``settings_file`` (if any) under the flags that were given
    (None = not given)."""
    values: dict[str, Any] = read_toml(config_file) if config_file else {}
    from_file = dict.fromkeys(values, config_file)
    if settings_file:
        settings = read_settings(settings_file)
        values.update(settings)
        from_file.update(dict.fromkeys(settings, settings_file))
    given = {k: v for k, v in flags.items() if v is not None and v != [] and v != ()}
    values.update(given)
    if "port" not in values:
        raise ConfigError("is required", file=settings_file or config_file, field="--port")
    try:
        cfg = SitterSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        file = None if name in given else from_file.get(name, settings_file or config_file)
        where = name if file else f"--{name.replace('_', '-')}"
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        message = message.removeprefix("Value error, ")
        raise ConfigError(message, file=file, field=where) from None
    cuda = cfg.env.get("CUDA_VISIBLE_DEVICES")
    if cfg.gpus and cuda is not None and cuda != cfg.cuda_visible_devices:
        raise ConfigError(
            f"{cfg.cuda_visible_devices} conflicts with --env CUDA_VISIBLE_DEVICES={cuda}", field="--gpus"
        )
    cfg.preset.check(cfg.launch_request())  # e.g. vllm without --path
    from corral.settings.addresses import check_advertised

    check_advertised(cfg)
    return cfg
