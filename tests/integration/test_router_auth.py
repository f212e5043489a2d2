"""Client auth cannot disappear by accident: a config that asks for API keys and finds none is
refused (by `corral up` at once, and by the router itself); `allow_no_auth = true` opts out; the
router's start line says whether auth is on and with how many keys."""

from __future__ import annotations

from pathlib import Path

import httpx
from launcher_helpers import Stack, corral

from support import free_port, wait_until

KEYS_VAR = "CORRAL_TEST_KEYS_13"


def _config(router_port: int, extra: str = "") -> str:
    return (
        f'[registry]\nenabled = false\n[router]\nport = {router_port}\napi_keys_env = "{KEYS_VAR}"\n{extra}'
    )


def _without_keys() -> dict[str, str]:
    return {KEYS_VAR: ""}  # set but empty: no key


def test_up_refuses_when_the_configured_keys_are_missing(tmp_path: Path, stacks: list[Stack]) -> None:
    s = Stack(tmp_path, _config(free_port()), env=_without_keys())
    stacks.append(s)
    r = s.run("up", "-d", "--timeout", "30")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"router.api_keys_env = '{KEYS_VAR}'" in r.stderr and "allow_no_auth = true" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (s.state / "launcher.json").exists()  # nothing was started
    check = s.run("config", "check")
    assert check.returncode == 1 and "would refuse to start" in check.stderr


def test_the_router_itself_refuses_without_keys_in_one_line(tmp_path: Path) -> None:
    r = corral("router", "--port", str(free_port()), "--api-keys-env", KEYS_VAR, env=_without_keys())
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and KEYS_VAR in r.stderr and "allow_no_auth" in r.stderr


def test_allow_no_auth_starts_and_says_auth_is_off(tmp_path: Path, stacks: list[Stack]) -> None:
    port = free_port()
    s = Stack(tmp_path, _config(port, "allow_no_auth = true\n"), env=_without_keys())
    stacks.append(s)
    s.up()
    assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).status_code == 200
    log = s.run("logs", "router").stdout
    assert "INFO" in log and "auth OFF" in log and "allow_no_auth = true" in log
    assert "WARNING corral router on" not in log


def test_keys_from_the_variable_turn_auth_on_and_the_start_line_counts_them(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    port = free_port()
    s = Stack(tmp_path, _config(port), env={KEYS_VAR: "k-one, k-two"})
    stacks.append(s)
    s.up()
    url = f"http://127.0.0.1:{port}/v1/models"
    assert httpx.get(url, timeout=10).status_code == 401
    ok = httpx.get(url, headers={"Authorization": "Bearer k-two"}, timeout=10)
    assert ok.status_code == 200
    wait_until(lambda: "auth on: 2 API key(s) from $" + KEYS_VAR in s.run("logs", "router").stdout, 10)
