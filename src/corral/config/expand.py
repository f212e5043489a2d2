"""``${VAR}`` / ``${VAR:-default}`` expansion in every string of a loaded config."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from corral.errors import ConfigError

# `$${X}` escapes to a literal `${X}`.
_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_str(value: str, env: Mapping[str, str], *, file: str | None, field: str) -> str:
    """Expand the variables in one string; an unset variable without a default is an error."""

    def one(m: re.Match[str]) -> str:
        escaped, name, default = m.group(1), m.group(2), m.group(3)
        if escaped:
            return m.group(0)[1:]
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"environment variable {name} is not set (use ${{{name}:-default}})", file=file, field=field
        )

    return _VAR.sub(one, value)


def expand(data: Any, env: Mapping[str, str], *, file: str | None, path: str = "") -> Any:
    """Return ``data`` with every string expanded; ``path`` names fields in errors."""
    if isinstance(data, str):
        return expand_str(data, env, file=file, field=path)
    if isinstance(data, list):
        return [expand(v, env, file=file, path=f"{path}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, dict):
        return {k: expand(v, env, file=file, path=f"{path}.{k}" if path else k) for k, v in data.items()}
    return data
