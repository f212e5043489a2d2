"""Helpers for the router's integration tests: start `corral mock` and `corral router` processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from support import CorralProcs, free_port, wait_http, wait_until


def start_mock(procs: CorralProcs, models: str = "m1", *args: str) -> str:
    """A `corral mock` on a free port; returns its base URL once it answers."""
    port = free_port()
    procs.start("mock", "--port", str(port), "--models", models, *args)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/models", timeout=30)
    return url


def start_router(
    procs: CorralProcs,
    workers: list[str],
    *args: str,
    config: dict[str, Any] | None = None,
    tmp: Path | None = None,
    env: dict[str, str] | None = None,
    healthy: int | None = None,
) -> str:
    """A `corral router` over ``workers``; returns its URL once ``healthy`` workers are in rotation."""
    port = free_port()
    argv = ["router", "--port", str(port)]
    for w in workers:
        argv += ["--worker-url", w]
    if config is not None:
        assert tmp is not None
        path = tmp / f"router-{port}.toml"
        path.write_text(to_toml(config))
        argv += ["--config", str(path)]
    procs.start(*argv, *args, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", timeout=30)
    want = len(workers) if healthy is None else healthy
    wait_until(lambda: httpx.get(url + "/health").json()["healthy"] >= want, 30, what="workers healthy")
    return url


def to_toml(config: dict[str, Any]) -> str:
    """A tiny TOML writer for the [router] table (strings, numbers, lists, one level of tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{value(k)} = {value(x)}" for k, x in v.items()) + "}"
        return str(v)

    lines = ["[router]"] + [f"{k} = {value(v)}" for k, v in config.items()]
    return "\n".join(lines) + "\n"


def stats(url: str) -> dict[str, Any]:
    """The mock's /stats document."""
    doc: dict[str, Any] = httpx.get(url + "/stats").json()
    return doc
