"""``{replica} {port} {ports.NAME} {file} {host} {gpus}`` in a config entry's strings."""

from __future__ import annotations

import re

from corral.errors import ConfigError

_PLACEHOLDER = re.compile(r"\{(replica|port|file|host|gpus|ports\.[A-Za-z0-9_-]+)\}")


def fill(text: str, ctx: dict[str, str], *, file: str, field: str) -> str:
    """Replace ``{replica} {port} {ports.NAME} {file} {host} {gpus}``; other braces stay as they are."""

    def one(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in ctx:
            raise ConfigError(f"placeholder {{{key}}} has no value here", file=file, field=field)
        return ctx[key]

    return _PLACEHOLDER.sub(one, text)
