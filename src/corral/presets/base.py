"""What every engine preset offers: the argv, the readiness path and the defaults of one engine.

A preset is a pure description (no I/O besides looking an executable up on PATH): the sitter turns
it into a :class:`corral.proc.ProcessSpec`, the launcher uses it to check a config before running.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import ClassVar

from corral.errors import ConfigError


@dataclass(frozen=True)
class LaunchRequest:
    """What the user asked for, as far as building a backend's argv is concerned."""

    host: str
    port: int
    path: str | None = None  # model path (or config file for InfiniLM-Rust)
    models: tuple[str, ...] = ()  # served names; the first is the alias passed to the engine
    command: str | None = None  # argv text for "command"; a script path for InfiniLM
    args: tuple[str, ...] = field(default=())  # extra argv words, appended verbatim

    @property
    def alias(self) -> str | None:
        """The name the engine is told to serve the model under, if any."""
        return self.models[0] if self.models else None


class Preset:
    """Base of the engine presets; subclasses set the class attributes and build the argv."""

    name: ClassVar[str]
    default_health_path: ClassVar[str] = "/health"
    default_max_concurrency: ClassVar[int | None] = None  # None = unlimited
    default_start_timeout_s: ClassVar[float] = 1800.0  # real engines load weights for minutes
    needs_path: ClassVar[bool] = True
    # Generation probe (corral.sitter.genprobe): on by default where the health path is known to
    # lie; ``busy_metric`` is the engine's Prometheus counter of finished requests (traffic seen).
    generation_probe: ClassVar[bool] = False
    busy_metric: ClassVar[str | None] = None

    def check(self, req: LaunchRequest) -> None:
        """Raise ConfigError when ``req`` lacks something this engine needs."""
        if self.needs_path and not req.path:
            raise ConfigError(f'service type "{self.name}" needs --path MODEL', field="--path")

    def argv(self, req: LaunchRequest) -> list[str]:
        """The backend's argv: the engine's own words, then ``req.args``."""
        self.check(req)
        return [*self.base_argv(req), *req.args]

    def base_argv(self, req: LaunchRequest) -> list[str]:
        """The engine's argv without the user's extra args."""
        raise NotImplementedError

    def health_path(self, req: LaunchRequest) -> str:
        """The readiness path on the backend (GET answers 200 once the model is loaded)."""
        return self.default_health_path

    def model_names(self, req: LaunchRequest) -> list[str]:
        """Model names known before the backend answers /v1/models (the alias, else the path)."""
        if req.models:
            return list(req.models)
        return [req.path] if req.path else []


def python_exe() -> str:
    """The ``python`` an engine is installed for: ``python`` on PATH, else ``python3``."""
    return "python" if shutil.which("python") else "python3"
