"""deploy/compose.yaml brought up with podman-compose as a new user would: Redis, registry, router,
launcher and the mock profile; a completion and a stream through the router's published port, the
backend in the launcher's dashboard view and the fleet's metrics from the launcher.

Redis comes from a local stand-in (tests/image/redis.Containerfile: Debian's redis-server on the
image's base), as no registry is reachable here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from podman_support import ROOT, podman

from support import free_port, wait_until

IMAGE = os.environ.get("CORRAL_IMAGE", "corral:dev")
BASE = os.environ.get("CORRAL_IMAGE_BASE", "localhost/corral-base:bookworm")
REDIS = "localhost/corral-redis:test"
TOKEN = "compose-test-token"

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def redis_image() -> str:
    if podman("image", "exists", REDIS, check=False).returncode != 0:
        here = Path(__file__).parent
        podman(
            "build", "-q", "--build-arg", f"BASE={BASE}", "-t", REDIS,
            "-f", str(here / "redis.Containerfile"), str(here), timeout=600,
        )  # fmt: skip
    return REDIS


@pytest.fixture
def stack(redis_image: str, tmp_path: Path) -> Iterator[tuple[int, int]]:
    conf = tmp_path / "containers.conf"
    # podman-compose cannot pass podman's global flags: the same settings, in the config file.
    conf.write_text(
        '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
    )
    router, dashboard = free_port(), free_port()
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(conf),
        "CORRAL_IMAGE": IMAGE,
        "REDIS_IMAGE": redis_image,
        "CORRAL_DASHBOARD_TOKEN": TOKEN,
        "ROUTER_PORT": str(router),
        "DASHBOARD_PORT": str(dashboard),
    }
    project = f"corraltest{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, "-m", "podman_compose", "-p", project, "-f", str(ROOT / "deploy/compose.yaml")]
    cmd += ["--profile", "mock"]

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cmd, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    try:
        up = compose("up", "-d")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        yield router, dashboard
    finally:
        compose("down", "-v", "-t", "10")


def test_compose_up_serves_through_the_router(stack: tuple[int, int]) -> None:
    router, dashboard = stack
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{router}/v1", api_key="none", timeout=10, max_retries=0
    )

    def complete() -> openai.types.chat.ChatCompletion | None:
        try:
            return client.chat.completions.create(
                model="mock-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
        except (openai.APIStatusError, openai.APIConnectionError):
            return None  # 404/503 until the mock registered; refused until the router listens

    done = wait_until(complete, timeout=240, interval=0.5, what="a completion through compose's router")
    assert done.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="mock-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    # The launcher's dashboard sees the backend through its own registry on the shared Redis.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = f"http://127.0.0.1:{dashboard}"

    def listed() -> bool:
        view = httpx.get(f"{base}/api/router", headers=auth, timeout=5).json()
        return any(i["service"] == "mock" for i in view.get("instances", {}).get("data", []))

    wait_until(listed, timeout=60, interval=0.5, what="the mock in the launcher's view")
    assert httpx.get(f"{base}/api/router", timeout=5).status_code == 401  # the token is required
    metrics = httpx.get(f"{base}/metrics", headers=auth, timeout=10)
    assert metrics.status_code == 200 and "corral_fleet_scrape_up" in metrics.text
