"""SGLang: ``python -m sglang.launch_server --model-path PATH --host H --port P``."""

from __future__ import annotations

from corral.presets.base import LaunchRequest, Preset, python_exe


class SglangPreset(Preset):
    """SGLang's server; ``/health`` answers 200 once the model is loaded."""

    name = "sglang"

    def base_argv(self, req: LaunchRequest) -> list[str]:
        argv = [python_exe(), "-m", "sglang.launch_server", "--model-path", str(req.path)]
        argv += ["--host", req.host, "--port", str(req.port)]
        if req.alias:
            argv += ["--served-model-name", req.alias]  # SGLang takes one name
        return argv
