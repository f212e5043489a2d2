"""Any command: ``--command`` split with shlex (never a shell), then ``--args``."""

from __future__ import annotations

import shlex

from corral.errors import ConfigError
from corral.presets.base import LaunchRequest, Preset


class CommandPreset(Preset):
    """An arbitrary OpenAI-compatible server; the user's command must bind ``--port`` itself."""

    name = "command"
    needs_path = False

    def check(self, req: LaunchRequest) -> None:
        if not req.command or not req.command.strip():
            raise ConfigError('service type "command" needs --command "PROGRAM ARGS..."', field="--command")

    def base_argv(self, req: LaunchRequest) -> list[str]:
        try:
            return shlex.split(str(req.command))
        except ValueError as exc:
            raise ConfigError(f"cannot split {req.command!r}: {exc}", field="--command") from None
