"""The llama.cpp preset's choices that the real fleet depends on (fast; no model needed)."""

from __future__ import annotations

import sys

import pytest

from corral.presets import LaunchRequest, get_preset
from corral.presets import llamacpp as llamacpp_mod

ARGS = ("--n_ctx", "2048", "--n_threads", "1", "--chat_format", "gemma")


def test_python_server_runs_with_the_interpreter_that_has_llama_cpp(
    installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python` on PATH may be another interpreter (pyenv shim, system python) without llama_cpp.
    monkeypatch.setattr(llamacpp_mod.shutil, "which", lambda name: None)
    req = LaunchRequest(host="127.0.0.1", port=8300, path="m.gguf", models=("gemma-3-270m",), args=ARGS)
    argv = get_preset("llama.cpp").argv(req)
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert argv[-6:] == list(ARGS)
    assert argv[argv.index("--interrupt_requests") + 1] == "false"  # probes must not cut streams
    assert argv[argv.index("--model_alias") + 1] == "gemma-3-270m"


def test_native_server_gets_the_same_options_in_its_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llamacpp_mod.shutil, "which", lambda name: "/usr/bin/llama-server")
    req = LaunchRequest(host="127.0.0.1", port=8300, path="m.gguf", models=("gemma-3-270m",), args=ARGS)
    preset = get_preset("llama.cpp")
    assert preset.argv(req)[-6:] == ["--ctx-size", "2048", "--threads", "1", "--chat-template", "gemma"]
    assert preset.health_path(req) == "/health"
    assert preset.default_max_concurrency == 1
