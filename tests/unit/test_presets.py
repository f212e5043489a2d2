"""Each engine preset builds the argv the engine expects and knows its readiness defaults."""

from __future__ import annotations

import sys

import pytest

from corral.errors import ConfigError
from corral.presets import PRESETS, LaunchRequest, get_preset
from corral.presets import base as preset_base
from corral.presets import llamacpp as llamacpp_mod

H, P = "127.0.0.1", 8100


def req(**kw: object) -> LaunchRequest:
    return LaunchRequest(host=H, port=P, **kw)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _python_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preset_base, "python_exe", lambda: "python")
    for mod in ("sglang", "llamacpp", "infinilm"):
        monkeypatch.setattr(f"corral.presets.{mod}.python_exe", lambda: "python")


def test_vllm_argv_with_alias_and_args() -> None:
    r = req(path="/m/qwen", models=("qwen",), args=("--max-model-len", "8192"))
    assert get_preset("vllm").argv(r) == [
        "vllm", "serve", "/m/qwen", "--host", H, "--port", "8100",
        "--served-model-name", "qwen", "--max-model-len", "8192",
    ]  # fmt: skip


def test_vllm_without_alias_serves_the_path_name() -> None:
    p = get_preset("vllm")
    assert p.argv(req(path="/m/q")) == ["vllm", "serve", "/m/q", "--host", H, "--port", "8100"]
    assert p.model_names(req(path="/m/q")) == ["/m/q"]
    assert p.health_path(req(path="/m/q")) == "/health"
    assert p.default_max_concurrency is None
    assert p.default_start_timeout_s >= 600


def test_sglang_argv() -> None:
    assert get_preset("sglang").argv(req(path="/m/q")) == [
        "python", "-m", "sglang.launch_server", "--model-path", "/m/q", "--host", H, "--port", "8100",
    ]  # fmt: skip
    assert get_preset("sglang").argv(req(path="/m/q", models=("q",)))[-2:] == ["--served-model-name", "q"]


def test_llamacpp_native_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llamacpp_mod.shutil, "which", lambda name: "/usr/bin/llama-server")
    p = get_preset("llama.cpp")
    r = req(path="/m/g.gguf", models=("gemma",))
    assert p.argv(r) == ["llama-server", "-m", "/m/g.gguf", "--host", H, "--port", "8100", "--alias", "gemma"]
    assert p.health_path(r) == "/health"
    assert p.default_max_concurrency == 1


def test_llamacpp_python_server_is_probed_on_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llamacpp_mod.shutil, "which", lambda name: None)
    p = get_preset("llama.cpp")
    r = req(path="/m/g.gguf", models=("gemma",), args=("--n_ctx", "2048"))
    assert p.argv(r) == [
        "python", "-m", "llama_cpp.server", "--model", "/m/g.gguf", "--host", H, "--port", "8100",
        "--model_alias", "gemma", "--interrupt_requests", "false", "--n_ctx", "2048",
    ]  # fmt: skip
    assert p.health_path(r) == "/v1/models"


def test_infinilm_runs_the_launch_script_like_the_legacy_babysitter() -> None:
    r = req(path="/models/Qwen3", args=("--dev", "nvidia", "--ndev", "2"))
    assert get_preset("InfiniLM").argv(r) == [
        "python", "scripts/launch_server.py", "--port", "8100", "--host", H,
        "--model-path", "/models/Qwen3", "--dev", "nvidia", "--ndev", "2",
    ]  # fmt: skip
    custom = req(path="/m", command="/opt/InfiniLM/scripts/launch_server.py")
    assert get_preset("InfiniLM").argv(custom)[1] == "/opt/InfiniLM/scripts/launch_server.py"
    assert get_preset("InfiniLM").health_path(r) == "/models"


def test_infinilm_rust_argv() -> None:
    assert get_preset("InfiniLM-Rust").argv(req(path="svc.toml")) == [
        "xtask",
        "service",
        "svc.toml",
        "-p",
        "8100",
    ]


def test_mock_argv_uses_this_python_and_a_short_start_timeout() -> None:
    p = get_preset("mock")
    argv = p.argv(req(models=("a", "b"), args=("--ttft-ms", "5")))
    head = [sys.executable, "-m", "corral", "mock", "--host", H, "--port", "8100"]
    assert argv == [*head, "--models", "a,b", "--ttft-ms", "5"]
    assert p.model_names(req()) == ["mock-model"]
    assert p.default_start_timeout_s <= 120


def test_command_is_shlex_split_never_a_shell() -> None:
    p = get_preset("command")
    r = req(command="python3 -m http.server 'a b' ; rm -rf /", args=("--x",))
    assert p.argv(r) == ["python3", "-m", "http.server", "a b", ";", "rm", "-rf", "/", "--x"]


@pytest.mark.parametrize("name", ["vllm", "sglang", "llama.cpp", "InfiniLM", "InfiniLM-Rust"])
def test_engines_need_a_path(name: str) -> None:
    with pytest.raises(ConfigError, match="--path"):
        get_preset(name).argv(req())


def test_command_needs_a_command() -> None:
    with pytest.raises(ConfigError, match="--command"):
        get_preset("command").argv(req())
    with pytest.raises(ConfigError, match="cannot split"):
        get_preset("command").argv(req(command="python 'unclosed"))


def test_names_are_case_insensitive_and_unknown_names_list_the_valid_ones() -> None:
    assert get_preset("VLLM").name == "vllm"
    assert get_preset("infinilm-rust").name == "InfiniLM-Rust"
    assert get_preset("llamacpp").name == "llama.cpp"
    with pytest.raises(ConfigError, match="unknown service type 'tgi'; use one of command, vllm"):
        get_preset("tgi")
    assert set(PRESETS) == {"command", "vllm", "sglang", "llama.cpp", "mock", "InfiniLM", "InfiniLM-Rust"}
