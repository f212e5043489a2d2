"""Read a config file (TOML or the older services.json), expand variables, validate.

Every problem becomes one :class:`~corral.errors.ConfigError` naming the file, the field path
(``backend[1].port``) and what is wrong.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from corral.config.expand import expand
from corral.config.legacy import LegacyFile, to_config_data
from corral.config.models import Config
from corral.errors import ConfigError


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("backend", 1, "port")`` -> ``backend[1].port``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _is_union_tag(part: int | str) -> bool:
    # pydantic names the union member it tried ("str", "list[str]", "ProbeConfig", "function-after[...]")
    return isinstance(part, str) and (
        part[:1].isupper()
        or part in ("str", "int", "float", "bool")
        or "[" in part
        or part.startswith("function")
    )


def _message(err: Any, model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    if err["type"] == "extra_forbidden":
        known = _known_fields(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _known_fields(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        for arg in (ann, *getattr(ann, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
                break
        else:
            return []
    return list(getattr(current, "model_fields", {}))


def format_validation(
    exc: ValidationError, model: type[BaseModel], file: str | None, prefix: tuple[str, ...] = ()
) -> ConfigError:
    """One ConfigError from a pydantic error: each problem as ``path: message``, joined on one line."""
    seen: dict[str, str] = {}
    for err in exc.errors():
        loc = (*prefix, *(p for p in err["loc"] if not _is_union_tag(p)))
        path = field_path(loc) or "(top level)"
        seen.setdefault(path, _message(err, model, loc[len(prefix) :]))
    parts = [f"{path}: {msg}" for path, msg in seen.items()]
    return ConfigError("; ".join(parts), file=file)


def parse_toml(text: str, file: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error names the line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", file=file) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate a ``corral.toml`` (or ``services.json``)."""
    env = os.environ if env is None else env
    p = Path(path)
    file = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such config file (pass -c FILE)", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=file) from None
    if p.suffix == ".json":
        data = _legacy_data(text, file, env, p.resolve().parent)
    else:
        data = expand(parse_toml(text, file), env, file=file)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise format_validation(exc, Config, file) from None
    _check_router_table(config, file)
    return config


def _check_router_table(config: Config, file: str) -> None:
    """Validate ``[router]`` against the router's own settings model, when the router is installed."""
    try:
        from corral.router.config import RouterSettings
    except ImportError:  # router not built (yet): the launcher-level fields were checked already
        return
    try:
        RouterSettings.model_validate(router_table(config))
    except ValidationError as exc:
        raise format_validation(exc, RouterSettings, file, prefix=("router",)) from None


def router_table(config: Config) -> dict[str, Any]:
    """The ``[router]`` table as the router reads it (launcher-only keys removed)."""
    return config.router.model_dump(exclude={"enabled"}, exclude_defaults=False)


def _legacy_data(text: str, file: str, env: Mapping[str, str], base_dir: Path) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"JSON syntax error: {exc.msg} (at line {exc.lineno}, column {exc.colno})", file=file
        ) from None
    raw = expand(raw, env, file=file)
    try:
        legacy = LegacyFile.model_validate(raw)
    except ValidationError as exc:
        raise format_validation(exc, LegacyFile, file) from None
    return to_config_data(legacy, env, base_dir, "127.0.0.1")
