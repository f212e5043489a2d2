"""Fuzz the published OpenAPI documents of live corral services with schemathesis.

The registry (`corral registry`), the launcher's control API (`corral up` with one
`python -m http.server` service) and a sitter's port+1 API (`corral sit`, mock backend) run as
real processes. For every operation, schemathesis generates
requests from the schema and checks: no 5xx, the status code and content type are documented,
the body matches the response schema, and every error is OpenAI-shaped JSON.

Left out: endless streams (`/v1/watch`, `/api/events`, `/api/services/{name}/logs/stream`) and what
would end the fixture (`/api/shutdown`, `/api/all/{action}`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support import CorralProcs, free_port, kill_tree, wait_http

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the shared tree
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def not_a_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """Never a 5xx (schemathesis' own check also flags documented 5xx; we want none at all)."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    return None


def openai_shaped_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx is ``{"error": {"message": str, "type": str, ...}}`` JSON."""
    if response.status_code < 400:
        return None
    ctype = response.headers.get("content-type", [""])
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    assert ctype.startswith("application/json"), f"{response.status_code} error as {ctype!r}"
    error = response.json().get("error")
    assert isinstance(error, dict), f"no error object: {response.text[:300]}"
    assert isinstance(error.get("message"), str) and isinstance(error.get("type"), str), response.text[:300]
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    openai_shaped_error,
]


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis caches data in ./.hypothesis: keep it out of the shared tree."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module")
def module_procs() -> Iterator[CorralProcs]:
    procs = CorralProcs()
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture(scope="module")
def registry_url(module_procs: CorralProcs, tmp_path_factory: pytest.TempPathFactory) -> str:
    port = free_port()
    log = tmp_path_factory.mktemp("registry") / "registry.log"
    module_procs.start("registry", "--port", str(port), "--token", TOKEN, "--log-level", "warning", log=log)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=30)
    return url


@pytest.fixture(scope="module")
def launcher_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("launcher")
    dashboard, web = free_port(), free_port()
    config = tmp / "corral.toml"
    config.write_text(
        f'[corral]\nstate_dir = "{tmp / "state"}"\n'
        f'[dashboard]\nport = {dashboard}\ntoken = "{TOKEN}"\n'
        f'[[service]]\nname = "web"\nport = {web}\nhealth = "tcp://{{host}}:{{port}}"\n'
        f'command = ["{sys.executable}", "-m", "http.server", "{{port}}", "--bind", "127.0.0.1"]\n'
    )
    with open(tmp / "launcher.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "up", "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_http(f"{url}/api/health", timeout=60)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean stop takes its service down too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        kill_tree(proc.pid)


def _fuzzer(operation: Any, mode: GenerationMode, timeout: float, sent: dict[str, int]) -> Any:
    @FUZZ
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        sent[operation.label] += 1
        case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=timeout)

    return run


def fuzz(schema: Any, timeout: float) -> list[str]:
    """Run every operation of ``schema`` through hypothesis; each failure as one entry."""
    failures: list[str] = []
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        sent[operation.label] = 0
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzzer(operation, mode, timeout, sent)()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # report every operation, not the first
                failures.append(f"{operation.label} ({mode.value}): {exc!s}")
    assert len(sent) >= 5 and all(sent.values()), f"requests sent per operation: {sent}"
    print(f"\n{sum(sent.values())} requests: {sent}")
    return failures


def test_registry_api_conforms_to_its_openapi(registry_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{registry_url}/openapi.json").exclude(path="/v1/watch")
    failures = fuzz(schema, timeout=10)
    assert not failures, "\n\n".join(failures)


def test_launcher_api_conforms_to_its_openapi(launcher_url: str) -> None:
    skip = ["/api/events", "/api/services/{name}/logs/stream", "/api/shutdown", "/api/all/{action}"]
    schema = schemathesis.openapi.from_url(f"{launcher_url}/openapi.json").exclude(path=skip)
    failures = fuzz(schema, timeout=30)
    assert not failures, "\n\n".join(failures)


@pytest.fixture(scope="module")
def sitter_url(module_procs: CorralProcs, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A `corral sit` (mock backend) with an admin token: its port+1 API."""
    tmp = tmp_path_factory.mktemp("sitter")
    port = free_port()
    argv = ["sit", "--port", str(port), "--service-type", "mock", "--models", "m1", "--state-dir", str(tmp)]
    module_procs.start(*argv, "--admin-token", TOKEN, "--restart-delay", "0.2", log=tmp / "sitter.log")
    url = f"http://127.0.0.1:{port + 1}"
    wait_http(f"{url}/health", timeout=60)
    return url


def test_sitter_api_conforms_to_its_openapi(sitter_url: str) -> None:
    """Admin actions included: /stop, /start and /restart on a mock are cheap and must never 5xx."""
    schema = schemathesis.openapi.from_url(f"{sitter_url}/openapi.json")
    failures = fuzz(schema, timeout=30)
    assert not failures, "\n\n".join(failures)
