"""The image as users run it: registry, router and a sitter+mock backend as three containers on one
podman network, the openai SDK through the router's published port, healthchecks, clean stops.

Needs the image (``make test-image`` builds it first; ``CORRAL_IMAGE`` names it).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import openai
import pytest
from podman_support import podman, stop_timed

from support import free_port, wait_until

IMAGE = os.environ.get("CORRAL_IMAGE", "corral:dev")
MAX_IMAGE_BYTES = 200 * 1000 * 1000
MODEL = "mock-chat"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def image() -> str:
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} not built: run `make image` (or `make test-image`)")
    return IMAGE


@pytest.fixture
def network() -> Iterator[str]:
    name = f"corral-test-{uuid.uuid4().hex[:8]}"
    podman("network", "create", name)
    containers: list[str] = []
    try:
        yield name
    finally:
        ids = podman("ps", "-aq", "--filter", f"network={name}", check=False).stdout.split()
        containers.extend(ids)
        if containers:
            podman("rm", "-f", "-t", "0", *containers, check=False)
        podman("network", "rm", "-f", name, check=False)


def _run(image: str, network: str, name: str, *args: str, publish: str | None = None) -> float:
    """Start a detached container named ``name`` (also its host name on the network)."""
    extra = ["-p", publish] if publish else []
    t0 = time.monotonic()
    podman("run", "-d", "--name", name, "--hostname", name, "--network", network, *extra, image, *args)
    return t0


def _healthy(name: str) -> bool:
    return podman("healthcheck", "run", name, check=False).returncode == 0


def test_image_is_small_non_root_and_has_no_compiler(image: str) -> None:
    size = int(podman("image", "inspect", image, "--format", "{{.Size}}").stdout)
    assert size < MAX_IMAGE_BYTES, f"{image} is {size / 1e6:.0f} MB"
    user = podman("image", "inspect", image, "--format", "{{.Config.User}}").stdout.strip()
    assert user == "corral"
    entry = podman("image", "inspect", image, "--format", "{{json .Config.Entrypoint}}").stdout
    assert "corral" in entry
    health = podman("image", "inspect", image, "--format", "{{json .Config.Healthcheck}}").stdout
    assert "corral.healthcheck" in health
    probe = podman(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
        "id -u; for c in gcc cc c++ clang; do command -v $c; done; exit 0",
    ).stdout.split()  # fmt: skip
    assert probe == ["10001"], f"uid / compilers found: {probe}"


def test_three_containers_serve_and_stop_cleanly(image: str, network: str) -> None:
    tag = network.rsplit("-", 1)[1]
    reg, router, backend = f"registry-{tag}", f"router-{tag}", f"chat-{tag}"
    port = free_port()
    _run(image, network, reg, "registry", "--host", "0.0.0.0")
    registry_url = f"http://{reg}:18000"
    t_router = _run(
        image, network, router, "router", "--host", "0.0.0.0", "--registry-url", registry_url,
        publish=f"127.0.0.1:{port}:8000",
    )  # fmt: skip
    t_backend = _run(
        image, network, backend, "sit", "--service-type", "mock", "--host", "0.0.0.0", "--port", "8100",
        "--models", MODEL, "--registry-url", registry_url, "--heartbeat-interval", "2",
    )  # fmt: skip

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=10, max_retries=0)

    def complete() -> openai.types.chat.ChatCompletion | None:
        try:
            return client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=5
            )
        except openai.APIStatusError as exc:  # 503 until the sitter's backend is healthy
            if exc.status_code != 503:
                raise
            return None

    done = wait_until(complete, timeout=90, interval=0.2, what=f"a completion through port {port}")
    ready_s = time.monotonic() - t_backend
    lead = t_backend - t_router
    print(f"\nbackend container start -> first completion: {ready_s:.1f}s (router ran {lead:.1f}s)")
    assert done.choices[0].message.content
    assert done.usage is not None and done.usage.completion_tokens == 5
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=5, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 5 and text

    for name in (reg, router, backend):
        wait_until(lambda n=name: _healthy(n), timeout=30, interval=0.5, what=f"{name} healthcheck")

    for name in (router, backend, reg):
        took, code = stop_timed(name, grace_s=10)
        print(f"podman stop {name}: {took:.1f}s, exit {code}")
        assert code == 0, f"{name} exited {code} on SIGTERM"
        assert took < 10, f"{name} took {took:.1f}s to stop"
