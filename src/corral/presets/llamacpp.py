"""llama.cpp: ``llama-server`` when installed, else llama-cpp-python's ``llama_cpp.server``.

The python server has no ``/health``, so readiness uses ``/v1/models`` there. Both serve one
request at a time unless told otherwise, hence ``max_concurrency`` 1.
"""

from __future__ import annotations

import shutil

from corral.presets.base import LaunchRequest, Preset, python_exe


class LlamaCppPreset(Preset):
    """llama.cpp's server, native or Python."""

    name = "llama.cpp"
    default_max_concurrency = 1

    @staticmethod
    def native() -> bool:
        """Whether the native ``llama-server`` binary is on PATH."""
        return shutil.which("llama-server") is not None

    def base_argv(self, req: LaunchRequest) -> list[str]:
        if self.native():
            argv = ["llama-server", "-m", str(req.path), "--host", req.host, "--port", str(req.port)]
            if req.alias:
                argv += ["--alias", req.alias]
            return argv
        argv = [python_exe(), "-m", "llama_cpp.server", "--model", str(req.path)]
        argv += ["--host", req.host, "--port", str(req.port)]
        if req.alias:
            argv += ["--model_alias", req.alias]
        return argv

    def health_path(self, req: LaunchRequest) -> str:
        return "/health" if self.native() else "/v1/models"
