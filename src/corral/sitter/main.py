"""Run a sitter from flags: validate, set up logging, run the event loop."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from corral.errors import ConfigError
from corral.sitter.config import build_config

SITTER_MARK = "[sitter] "  # `corral logs NAME --sitter` keeps the lines that start with it


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
    # The sitter's own lines carry SITTER_MARK; its stdout carries the backend's output as is
    # (see Sitter), so one stream reads as the engine's log with the sitter's lines marked.
    logging.basicConfig(
        level=level, format=f"{SITTER_MARK}%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )

    from corral.sitter.runner import Sitter

    async def run() -> int:
        return await Sitter(cfg).run()

    # The stdlib loop: the sitter is no hot path, and it keeps the resident size down.
    return asyncio.run(run())
