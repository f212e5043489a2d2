"""`corral sit` settings: flags, legacy TOML layouts, precedence and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.errors import ConfigError
from corral.sitter.backend import instance_id, process_spec
from corral.sitter.backoff import Backoff
from corral.sitter.config import build_config, parse_env
from corral.sitter.models import model_ids


def flags(**kw: Any) -> dict[str, Any]:
    return kw


def test_defaults_match_the_legacy_babysitter() -> None:
    cfg = build_config(flags(port=8100, service_type="mock"))
    assert (cfg.max_restarts, cfg.restart_delay, cfg.heartbeat_interval) == (10000, 5.0, 30.0)
    assert cfg.host == "127.0.0.1" and cfg.state_dir is None and cfg.sitter_port == 8101
    assert cfg.service_name == "mock-8100"


def test_flags_are_parsed() -> None:
    cfg = build_config(
        flags(
            port=9000,
            service_type="command",
            command="python -m srv",
            args="--a 1 --b 'two words'",
            env=["A=1", "B=x=y"],
            models="m1, m2",
        )
    )
    assert cfg.args == ["--a", "1", "--b", "two words"]
    assert cfg.env == {"A": "1", "B": "x=y"}
    assert cfg.models == ["m1", "m2"]


def test_legacy_toml_layout_and_flag_precedence(tmp_path: Path) -> None:
    f = tmp_path / "sitter.toml"
    f.write_text(
        'name = "vllm-1"\nhost = "127.0.0.1"\nport = 8100\nregistry_url = "http://localhost:18000"\n'
        "[babysitter]\nmax_restarts = 7\nrestart_delay = 2\nheartbeat_interval = 10\n"
        '[backend]\ntype = "vllm"\nmodel = "/models/llama"\nargs = ["--tp", "2"]\n'
        'work_dir = "/srv"\nenv = { CUDA_VISIBLE_DEVICES = "0" }\n'
    )
    cfg = build_config(flags(port=8200, restart_delay=0.5), str(f))
    assert cfg.port == 8200 and cfg.restart_delay == 0.5  # flags win
    assert (cfg.name, cfg.service_type, cfg.path, cfg.max_restarts) == ("vllm-1", "vllm", "/models/llama", 7)
    assert cfg.env == {"CUDA_VISIBLE_DEVICES": "0"} and cfg.args == ["--tp", "2"] and cfg.work_dir == "/srv"


def test_kebab_case_keys(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('port = 8300\nservice-type = "mock"\nmax-restarts = 3\nargs = "--ttft-ms 5"\n')
    cfg = build_config({}, str(f))
    assert (cfg.service_type, cfg.max_restarts, cfg.args) == ("mock", 3, ["--ttft-ms", "5"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = ", "s.toml: invalid TOML"),
        (
            "port = 8100\nmax_restarts = -1",
            "s.toml: max_restarts: Input should be greater than or equal to 0",
        ),
        ("port = 8100\nbogus = 1", "s.toml: bogus: unknown key"),
        ('port = "x"', "s.toml: port: Input should be a valid integer"),
    ],
)
def test_bad_toml_names_file_field_and_problem(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        build_config({}, str(f))
    assert str(info.value).startswith(str(tmp_path / message)) or message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_missing_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        build_config({}, str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="--port: is required"):
        build_config(flags(service_type="mock"))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (flags(port=8100, env=["NOEQUALS"]), "--env: expected K=V"),
        (flags(port=8100, restart_delay=-1), "--restart-delay: Input should be greater than or equal to 0"),
        (flags(port=8100, service_type="tgi"), "--service-type: unknown service type 'tgi'"),
        (flags(port=8100, service_type="vllm"), '--path: service type "vllm" needs --path MODEL'),
        (flags(port=8100, health_path="health"), "--health-path: must start with '/'"),
        (flags(port=8100, registry_url="localhost:18000"), "--registry-url: must be an http(s) URL"),
        (flags(port=65535), "--port: Input should be less than or equal to 65534"),
    ],
)
def test_bad_flags_name_the_flag(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(bad)
    assert str(info.value).startswith(message)


def test_process_spec_uses_port_probes_and_legacy_restart_counting(tmp_path: Path) -> None:
    cfg = build_config(
        flags(port=8100, service_type="mock", max_restarts=4, restart_delay=0.25, state_dir=str(tmp_path))
    )
    spec = process_spec(cfg)
    assert spec.ports == [8100]
    assert spec.readiness is not None and spec.readiness.http == "http://127.0.0.1:8100/health"
    assert spec.liveness is not None and spec.liveness.http == spec.readiness.http
    assert spec.restart.max_restarts == 4
    assert spec.restart.backoff_initial_s == spec.restart.backoff_max_s == 0.25
    assert spec.pid_file == tmp_path / "mock-8100.pid" and spec.log_file == tmp_path / "mock-8100.log"
    assert spec.start_timeout_s == 60


def test_wildcard_host_is_probed_on_loopback() -> None:
    cfg = build_config(flags(port=8100, service_type="mock", host="0.0.0.0", health_path="/ready"))
    spec = process_spec(cfg)
    assert spec.readiness is not None and spec.readiness.http == "http://127.0.0.1:8100/ready"


def test_helpers() -> None:
    assert parse_env(["A=", "B=c"]) == {"A": "", "B": "c"}
    assert instance_id("my svc/1", "h", 1) == "my-svc-1@h:1"
    assert model_ids({"data": [{"id": "a"}, {"x": 1}, {"id": "b"}]}) == ["a", "b"]
    assert model_ids([{"id": "a"}]) == ["a"] and model_ids("junk") == []
    b = Backoff(initial=0.1, factor=2, maximum=0.3)
    assert [b.next() for _ in range(4)] == [0.1, 0.2, 0.3, 0.3]
    b.reset()
    assert b.next() == 0.1


def test_gpus_set_cuda_visible_devices_and_restarts_count_since_start(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('port = 8100\nservice-type = "mock"\ngpus = [1, 0]\ngpu-release-timeout = 5\n')
    cfg = build_config(flags(router_token="t"), str(f))
    assert (cfg.gpus, cfg.gpu_release_timeout, cfg.router_token) == ([1, 0], 5.0, "t")
    spec = process_spec(cfg)
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "1,0" and spec.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert spec.restart.window_s is None  # legacy --max-restarts: every restart since start
    assert build_config(flags(port=8100, service_type="mock", gpus="0, 2")).gpus == [0, 2]
    assert build_config(flags(port=8100, service_type="mock", gpu_release_timeout=60)).gpus == []
    assert "CUDA_VISIBLE_DEVICES" not in process_spec(build_config(flags(port=8100, service_type="mock"))).env


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            flags(port=8100, service_type="mock", gpus="0,x"),
            "--gpus: expected GPU indices such as 0,1, got '0,x'",
        ),
        (flags(port=8100, service_type="mock", gpus="1,1"), "--gpus: expected distinct GPU indices >= 0"),
        (
            flags(port=8100, service_type="mock", gpus="0", env=["CUDA_VISIBLE_DEVICES=1"]),
            "--gpus: 0 conflicts with --env",
        ),
        (flags(port=8100, gpu_release_timeout=0), "--gpu-release-timeout: Input should be greater than 0"),
    ],
)
def test_bad_gpu_flags_name_the_flag(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(bad)
    assert str(info.value).startswith(message)
