"""corral.toml loading: every error names the file and the field path, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from corral.config import load_config, load_plan, resolve_plan
from corral.errors import ConfigError

BASE = """
[registry]
port = 28000
[router]
port = 28800
[dashboard]
port = 28080
"""


def write(tmp_path: Path, text: str, name: str = "corral.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error_of(path: str, **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_plan(path, **kw)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith(path)
    return msg


def test_unknown_field_is_named_with_its_path_and_a_suggestion(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        BASE + '[[backend]]\nname = "a"\npreset = "mock"\nmodels = ["m"]\nport = 28100\nreplica = 2\n',
    )
    msg = error_of(p)
    assert "backend[0].replica: unknown field (did you mean 'replicas'?)" in msg


def test_bad_value_names_the_field_path(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        BASE
        + '[[backend]]\nname = "a"\npreset = "mock"\nmodels = ["m"]\nport = 28100\n'
        + '[[backend]]\nname = "b"\npreset = "mock"\nmodels = ["m"]\nport = 99999\n',
    )
    assert "backend[1].port: Input should be less than or equal to 65535" in error_of(p)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "[corral]\nhost = \n")
    msg = error_of(p)
    assert "TOML syntax error" in msg and "line 2" in msg


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    assert "no such config file" in error_of(str(tmp_path / "nope.toml"))


def test_env_expansion_with_default_and_unset_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_T_PORT", "28500")
    monkeypatch.delenv("CORRAL_T_UNSET", raising=False)
    text = BASE + (
        '[[service]]\nname = "s"\ncommand = ["x", "${CORRAL_T_MSG:-hello world}", "$${LITERAL}"]\n'
        "port = ${CORRAL_T_PORT}\n"
    )
    # A number from a variable must still be a number: quote-less expansion happens in strings only.
    p = write(tmp_path, text.replace("port = ${CORRAL_T_PORT}", 'env = { P = "${CORRAL_T_PORT}" }'))
    plan = load_plan(p)
    svc = plan.get("s")
    assert svc is not None
    assert svc.argv == ["x", "hello world", "${LITERAL}"]
    assert svc.env == {"P": "28500"}
    bad = write(
        tmp_path, BASE + '[[service]]\nname = "s"\ncommand = ["x", "${CORRAL_T_UNSET}"]\n', "bad.toml"
    )
    msg = error_of(bad)
    assert "service[0].command[1]" in msg and "CORRAL_T_UNSET is not set" in msg


def test_dependency_cycle_is_named(tmp_path: Path) -> None:
    svc = '[[service]]\nname = "{n}"\ncommand = ["true"]\ndepends_on = ["{d}"]\n'
    p = write(tmp_path, BASE + svc.format(n="a", d="b") + svc.format(n="b", d="c") + svc.format(n="c", d="a"))
    assert "dependency cycle: a -> b -> c -> a" in error_of(p)


def test_unknown_and_disabled_dependencies(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + '[[service]]\nname = "a"\ncommand = ["true"]\ndepends_on = ["ghost"]\n')
    assert "service[0].depends_on[0]: depends on 'ghost', which is not defined" in error_of(p)
    q = write(
        tmp_path,
        BASE
        + '[[service]]\nname = "a"\ncommand = ["true"]\ndepends_on = ["b"]\n'
        + '[[service]]\nname = "b"\ncommand = ["true"]\nenabled = false\n',
        "q.toml",
    )
    assert "which is disabled" in error_of(q)


def test_port_clash_with_a_sitter_port_plus_one(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        BASE
        + '[[backend]]\nname = "a"\npreset = "mock"\nmodels = ["m"]\nport = 28100\n'
        + '[[service]]\nname = "web"\ncommand = ["true"]\nport = 28101\n',
    )
    msg = error_of(p)
    assert "service[0].port" in msg and "28101" in msg and "a-0 (sitter port+1)" in msg


def test_replicas_clash_when_the_step_is_too_small(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        BASE + '[[backend]]\nname = "a"\npreset = "mock"\nmodels = ["m"]\n'
        "port = 28100\nreplicas = 2\nport_step = 1\n",
    )
    assert "port 28101 of a-1 (api) is already taken by a-0 (sitter port+1)" in error_of(p)


def test_too_many_gpus(tmp_path: Path) -> None:
    text = (
        BASE + '[[backend]]\nname = "q"\npreset = "vllm"\nmodel = "/m"\n'
        "port = 28100\nreplicas = 3\ngpus_per_replica = 1\n"
    )
    p = write(tmp_path, "[corral]\ngpus = 2\n" + text)
    msg = error_of(p)
    assert "backend[0].gpus_per_replica" in msg and "need 3 free GPUs but only 2" in msg


def test_gpus_are_distinct_per_replica_and_set_cuda_visible_devices(tmp_path: Path) -> None:
    text = BASE + (
        '[[backend]]\nname = "q"\npreset = "vllm"\nmodel = "/m"\n'
        "port = 28100\nreplicas = 2\ngpus_per_replica = 2\n"
        '[[service]]\nname = "s"\ncommand = ["run", "--gpus", "{gpus}"]\ngpus_per_replica = 1\n'
    )
    plan = load_plan(write(tmp_path, text), gpus=[0, 1, 2, 3, 4])
    q0, q1, s = plan.get("q-0"), plan.get("q-1"), plan.get("s")
    assert q0 and q1 and s
    assert (q0.gpus, q1.gpus, s.gpus) == ([0, 1], [2, 3], [4])
    assert q1.env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert s.argv == ["run", "--gpus", "4"] and s.env["CUDA_VISIBLE_DEVICES"] == "4"


def test_replicas_ports_and_placeholders(tmp_path: Path) -> None:
    text = BASE + (
        '[[service]]\nname = "web"\n'
        'command = ["srv", "--port", "{port}", "--admin", "{ports.admin}", "--id", "{replica}"]\n'
        "port = 29000\nports = { admin = 29500 }\nreplicas = 3\nport_step = 2\n"
        'env = { URL = "http://{host}:{port}/x", JSON = "{\\"keep\\": 1}" }\n'
        'health = "http://{host}:{port}/health"\n'
    )
    plan = load_plan(write(tmp_path, text))
    w2 = plan.get("web-2")
    assert w2 is not None
    assert w2.argv == ["srv", "--port", "29004", "--admin", "29504", "--id", "2"]
    assert w2.ports == {"port": 29004, "admin": 29504}
    assert w2.env == {"URL": "http://127.0.0.1:29004/x", "JSON": '{"keep": 1}'}
    assert w2.readiness is not None and w2.readiness.http == "http://127.0.0.1:29004/health"
    bad = write(tmp_path, BASE + '[[service]]\nname = "s"\ncommand = ["x", "{file}"]\n', "bad.toml")
    assert "service[0].command[1]: placeholder {file} has no value here" in error_of(bad)


def test_replicas_from_glob_one_per_file_sorted(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for n in ("b.gguf", "a.gguf", "skip.txt"):
        (models / n).write_text("")
    text = BASE + (
        '[[backend]]\nname = "ll"\npreset = "llama.cpp"\nmodel = "{file}"\n'
        'replicas_from = "models/*.gguf"\nport = 28100\n'
    )
    plan = load_plan(write(tmp_path, text))
    files = [p.sitter.path for p in plan.processes if p.entry == "ll" and p.sitter]
    assert files == [str(models / "a.gguf"), str(models / "b.gguf")]
    none = write(tmp_path, text.replace("*.gguf", "*.none"), "none.toml")
    assert "backend[0].replicas_from" in error_of(none)


def test_start_order_dependencies_and_conditions(tmp_path: Path) -> None:
    text = BASE + (
        '[[backend]]\nname = "chat"\npreset = "mock"\nmodels = ["m"]\nport = 28100\nreplicas = 2\n'
        '[[service]]\nname = "web"\ncommand = ["w"]\n'
        'depends_on = ["chat", {name = "db", condition = "started"}]\n'
        '[[service]]\nname = "db"\ncommand = ["d"]\nhealth = "tcp://127.0.0.1:28600"\n'
    )
    plan = load_plan(write(tmp_path, text))
    names = [p.name for p in plan.processes]
    assert names.index("registry") < names.index("router") < names.index("chat-0")
    assert names.index("db") < names.index("web") and names.index("chat-1") < names.index("web")
    web = plan.get("web")
    assert web is not None
    assert [(d.name, d.condition) for d in web.depends_on] == [
        ("chat-0", "healthy"),
        ("chat-1", "healthy"),
        ("db", "started"),
    ]
    chat1 = plan.get("chat-1")
    assert chat1 is not None and chat1.kind == "sitter"
    assert chat1.ports == {"api": 28110, "sitter": 28111}
    assert chat1.argv[:5] == [sys.executable, "-m", "corral", "sit", "--settings"]
    assert chat1.sitter and chat1.sitter.registry_url == "http://127.0.0.1:28000"
    assert [d.name for d in chat1.depends_on] == ["registry"]
    assert plan.levels()["web"] == 2


def test_tokens_stay_off_the_command_line(tmp_path: Path) -> None:
    text = (
        '[registry]\nport = 28000\ntoken = "regsecret"\n[router]\nport = 28800\nadmin_token = "adminsecret"\n'
        '[dashboard]\nport = 28080\n[[backend]]\nname = "a"\npreset = "mock"\nmodels = ["m"]\nport = 28100\n'
    )
    plan = load_plan(write(tmp_path, text))
    for p in plan.processes:
        assert not any("secret" in a for a in p.argv), p.name
    registry, router, a0 = plan.get("registry"), plan.get("router"), plan.get("a-0")
    assert registry and router and a0
    assert a0.sitter and a0.sitter.registry_token == "regsecret" and "CORRAL_REGISTRY_TOKEN" not in a0.env
    assert '"regsecret"' in a0.files[a0.argv[-1]]  # in the private settings file the argv names
    assert 'admin_token = "adminsecret"' in next(iter(router.files.values()))


def test_router_table_is_checked_against_the_routers_schema(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + "[router.breaker]\nfailures = 0\n")
    assert "router.breaker.failures" in error_of(p)


def test_services_json_becomes_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_T_API_PORT", "29100")
    doc = {
        "backend_services": [
            {
                "id": "api",
                "name": "API",
                "module": "app.main:app",
                "default_port": 29000,
                "port_env": "CORRAL_T_API_PORT",
                "health_endpoint": "/healthz",
                "depends_on": ["db"],
                "tags": ["web"],
                "provides": ["rest"],
            },
            {"id": "db", "module": "db.main:app", "default_port": 29200, "auto_start": False},
        ]
    }
    path = write(tmp_path, json.dumps(doc), "services.json")
    config = load_config(path)
    assert not config.registry.enabled and not config.router.enabled
    plan = resolve_plan(config, path)
    api = plan.get("api")
    assert api is not None
    assert api.argv == [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        "29100",
    ]
    assert api.cwd == str(tmp_path)
    assert api.readiness is not None and api.readiness.http == "http://127.0.0.1:29100/healthz"
    assert [d.name for d in api.depends_on] == ["db"]
    db = plan.get("db")
    assert db is not None and not db.auto_start
    assert [p.name for p in plan.processes] == ["db", "api"]
    bad = write(tmp_path, '{"backend_services": [{"id": "x", "module": "m"}]}', "bad.json")
    assert "backend_services[0].default_port: Field required" in error_of(bad)


def test_reserved_and_duplicate_names(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + '[[service]]\nname = "router"\ncommand = ["x"]\n')
    assert "service[0].name" in error_of(p)
    q = write(
        tmp_path,
        BASE + '[[service]]\nname = "a"\ncommand = ["x"]\n[[service]]\nname = "a"\ncommand = ["y"]\n',
        "q.toml",
    )
    assert "service[1].name: name 'a' is already used by service[0]" in error_of(q)


def test_command_must_be_an_argv_list(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + '[[service]]\nname = "a"\ncommand = "python -m app"\n')
    assert "service[0].command: must be a list of argv words" in error_of(p)


def test_example_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("corral.toml", "services.json", "vllm.toml", "sglang.toml"):
        if (root / name).exists():
            load_plan(str(root / name), gpus=[0, 1, 2, 3, 4, 5, 6, 7])


def test_settle_s_defaults_to_one_second_and_reaches_the_process_spec(tmp_path: Path) -> None:
    from corral.launcher.orchestrator import process_spec
    from corral.launcher.state import StateDir

    p = write(
        tmp_path,
        BASE
        + '[[service]]\nname = "a"\ncommand = ["x"]\n'
        + '[[service]]\nname = "b"\ncommand = ["y"]\nsettle_s = 0\n',
    )
    plan = load_plan(p)
    assert [plan.get(n).settle_s for n in ("a", "b")] == [1.0, 0.0]  # type: ignore[union-attr]
    spec = process_spec(plan.get("a"), StateDir(tmp_path / "state"))  # type: ignore[arg-type]
    assert spec.settle_s == 1.0 and spec.readiness is None
    bad = write(tmp_path, BASE + '[[service]]\nname = "a"\ncommand = ["x"]\nsettle_s = -1\n', "bad.toml")
    assert "service[0].settle_s" in error_of(bad)


def test_generation_probe_reaches_the_sitter_settings_and_no_flag(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[backend]]\nname = "chat"\npreset = "mock"\nmodels = ["m"]\nport = 28300\n'
        "generation_probe = { enabled = true, interval_s = 5, restart_after = 3 }\n",
    )
    sitter = load_plan(path).get("chat-0")
    assert sitter is not None and sitter.sitter is not None
    gp = sitter.sitter.generation_probe
    assert (gp.enabled, gp.interval_s, gp.restart_after, gp.failures) == (True, 5, 3, 2)
    from corral.settings.cli import as_flags

    assert not any(f.startswith("--generation") for f in as_flags(sitter.sitter))  # a table: file only
    bad = write(tmp_path, '[[backend]]\nname = "c"\npreset = "mock"\nmodels = ["m"]\nport = 28400\n'
                "generation_probe = { interval_s = 0 }\n", name="bad.toml")  # fmt: skip
    assert "generation_probe" in error_of(bad)
