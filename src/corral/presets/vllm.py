"""vLLM: ``vllm serve PATH --host H --port P [--served-model-name A ...]``."""

from __future__ import annotations

from corral.presets.base import LaunchRequest, Preset


class VllmPreset(Preset):
    """vLLM's OpenAI server; ``/health`` answers 200 once the engine is up."""

    name = "vllm"
    # vllm#39863: the engine core can die while the API server keeps answering /health 200.
    generation_probe = True
    busy_metric = "vllm:request_success_total"

    def base_argv(self, req: LaunchRequest) -> list[str]:
        argv = ["vllm", "serve", str(req.path), "--host", req.host, "--port", str(req.port)]
        if req.models:
            argv += ["--served-model-name", *req.models]  # vLLM accepts several names
        return argv
