"""Engine presets: for each service type, how to launch the engine and how to tell it is ready.

One module per engine (like the SGLang router's ``serve.py`` launcher classes)::

    preset = get_preset("vllm")
    argv = preset.argv(LaunchRequest(host="127.0.0.1", port=8100, path="/models/qwen"))
"""

from __future__ import annotations

from corral.errors import ConfigError
from corral.presets.base import LaunchRequest, Preset
from corral.presets.command import CommandPreset
from corral.presets.infinilm import InfiniLMPreset, InfiniLMRustPreset
from corral.presets.llamacpp import LlamaCppPreset
from corral.presets.mock import MockPreset
from corral.presets.sglang import SglangPreset
from corral.presets.vllm import VllmPreset

PRESETS: dict[str, type[Preset]] = {
    p.name: p
    for p in (
        CommandPreset,
        VllmPreset,
        SglangPreset,
        LlamaCppPreset,
        MockPreset,
        InfiniLMPreset,
        InfiniLMRustPreset,
    )
}

# Spellings seen in older launch scripts and configs.
_ALIASES = {
    "llamacpp": "llama.cpp",
    "llama_cpp": "llama.cpp",
    "infinilm": "InfiniLM",
    "infinilm-rust": "InfiniLM-Rust",
}


def get_preset(name: str) -> Preset:
    """The preset for a service type (case-insensitive); ConfigError names the valid ones."""
    key = _ALIASES.get(name.lower(), name)
    cls = PRESETS.get(key) or next((c for n, c in PRESETS.items() if n.lower() == name.lower()), None)
    if cls is None:
        raise ConfigError(
            f"unknown service type {name!r}; use one of {', '.join(PRESETS)}", field="--service-type"
        )
    return cls()


__all__ = ["PRESETS", "LaunchRequest", "Preset", "get_preset"]
