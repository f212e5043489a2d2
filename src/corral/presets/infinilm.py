"""InfiniLM (Python ``launch_server.py``) and InfiniLM-Rust (``xtask service``).

The legacy babysitter ran ``python3 <InfiniLM>/scripts/launch_server.py --port P --host H
--model-path PATH [--dev nvidia --ndev N --max-batch B ...]`` from the InfiniLM checkout, and
``xtask service CONFIG -p P`` from the InfiniLM-Rust checkout, waiting on ``/models`` for both.
Here ``--command`` names the launch script (default ``scripts/launch_server.py``, relative to
``--work-dir``) and device flags go in ``--args``.
"""

from __future__ import annotations

from corral.presets.base import LaunchRequest, Preset, python_exe

DEFAULT_LAUNCH_SCRIPT = "scripts/launch_server.py"


class InfiniLMPreset(Preset):
    """InfiniLM's Python server (FastAPI); readiness on ``/models`` as the legacy tool did."""

    name = "InfiniLM"
    default_health_path = "/models"

    def base_argv(self, req: LaunchRequest) -> list[str]:
        script = req.command or DEFAULT_LAUNCH_SCRIPT
        argv = [python_exe(), script, "--port", str(req.port), "--host", req.host]
        argv += ["--model-path", str(req.path)]
        if req.alias:
            argv += ["--model-name", req.alias]
        return argv


class InfiniLMRustPreset(Preset):
    """InfiniLM-Rust's service: ``xtask service CONFIG -p P`` (the model comes from CONFIG)."""

    name = "InfiniLM-Rust"
    default_health_path = "/models"

    def base_argv(self, req: LaunchRequest) -> list[str]:
        return ["xtask", "service", str(req.path), "-p", str(req.port)]
