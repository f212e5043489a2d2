"""The ``[router]`` table as the launcher hands it to the router, in the router's own file."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from corral.config.load import router_table
from corral.config.models import Config


def router_file_table(config: Config, base: Path, local_registry: bool) -> dict[str, Any]:
    """``[router]`` as the router's file holds it: paths made absolute (they are relative to
    corral.toml, the router reads its file from the state dir), key expiries as ISO text, and
    rate limits shared through the registry's Redis when the registry runs on one here."""
    skip = ("host", "port", "registry_url")
    table = {k: v for k, v in router_table(config).items() if k not in skip}
    for name in ("keys_file", "usage_log"):
        if isinstance(table.get(name), str):
            table[name] = str((base / table[name]).resolve())
    if isinstance(table.get("keys"), list):
        table["keys"] = [
            {k: v.isoformat() if isinstance(v, date | datetime | time) else v for k, v in entry.items()}
            if isinstance(entry, dict)
            else entry
            for entry in table["keys"]
        ]
    store = config.registry.store
    if local_registry and store.startswith(("redis://", "rediss://", "unix://")):
        table.setdefault("limits_store", store)
    return table
