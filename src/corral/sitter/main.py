"""Run a sitter from flags: validate, set up logging, run the event loop."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from corral.errors import ConfigError
from corral.sitter.config import build_config


def main(
    flags: dict[str, Any],
    config_file: str | None,
    log_level: str = "info",
    *,
    settings_file: str | None = None,
) -> int:
    """Build the config (ConfigError -> one line, exit 2 via corral.cli) and run until signalled."""
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise ConfigError(f"unknown log level {log_level!r}", field="--log-level")
    cfg = build_config(flags, config_file, settings_file)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )

    from corral.sitter.runner import Sitter

    async def run() -> int:
        return await Sitter(cfg).run()

    # The stdlib loop: the sitter is no hot path, and it keeps the resident size down.
    return asyncio.run(run())
