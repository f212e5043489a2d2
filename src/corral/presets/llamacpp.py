"""llama.cpp: ``llama-server`` when installed, else llama-cpp-python's ``llama_cpp.server``.

The python server has no ``/health``, so readiness uses ``/v1/models`` there. Both serve one
request at a time unless told otherwise, hence ``max_concurrency`` 1. The python server is
started with ``--interrupt_requests false``: by default it cuts a stream short (with ``[DONE]``)
whenever any other request arrives, and every ``/v1/models`` probe counts as one.

Extra ``args`` may use the python server's option names (``--n_ctx``, ``--n_threads``,
``--chat_format``, ``--n_gpu_layers``); with the native binary they are translated, so one config
runs on either server.
"""

from __future__ import annotations

import shutil
import sys
from importlib.util import find_spec

from corral.presets import base
from corral.presets.base import LaunchRequest, Preset

# llama_cpp.server option -> llama-server option (same value).
_NATIVE_NAMES = {
    "--n_ctx": "--ctx-size",
    "--n_threads": "--threads",
    "--chat_format": "--chat-template",
    "--n_gpu_layers": "--n-gpu-layers",
    "--n_batch": "--batch-size",
}


def python_exe() -> str:
    """This interpreter when llama-cpp-python is installed in it (``pip install corral[llamacpp]``
    into a virtualenv that is not on PATH), else ``python`` on PATH."""
    return sys.executable if find_spec("llama_cpp") is not None else base.python_exe()


class LlamaCppPreset(Preset):
    """llama.cpp's server, native or Python."""

    name = "llama.cpp"
    default_max_concurrency = 1

    @staticmethod
    def native() -> bool:
        """Whether the native ``llama-server`` binary is on PATH."""
        return shutil.which("llama-server") is not None

    def argv(self, req: LaunchRequest) -> list[str]:
        self.check(req)
        if not self.native():
            return [*self.base_argv(req), *req.args]
        extra = [_NATIVE_NAMES.get(a, a) for a in req.args]
        return [*self.base_argv(req), *extra]

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
        if "--interrupt_requests" not in req.args:
            argv += ["--interrupt_requests", "false"]
        return argv

    def health_path(self, req: LaunchRequest) -> str:
        return "/health" if self.native() else "/v1/models"
