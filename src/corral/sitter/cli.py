"""`corral sit`: babysit one backend (the legacy babysitter's flags keep working)."""

from __future__ import annotations

from typing import Any

import typer

SERVICE_TYPES = "command, vllm, sglang, llama.cpp, mock, InfiniLM, InfiniLM-Rust"


def register(app: typer.Typer) -> None:
    """Add the ``sit`` command to the corral CLI."""

    @app.command("sit")
    def sit(
        name: str | None = typer.Option(None, "--name", "-n", help="Service name (default TYPE-PORT)."),
        host: str | None = typer.Option(None, help="Address the backend and the sitter bind [127.0.0.1]."),
        advertise_host: str | None = typer.Option(
            None,
            help="Address routers on other hosts dial [the bind address; bound to 0.0.0.0: the "
            "address of the route to the registry].",
        ),
        port: int | None = typer.Option(
            None, "--port", "-p", help="Backend port; the sitter serves on port + 1."
        ),
        service_type: str | None = typer.Option(None, help=f"One of {SERVICE_TYPES} [command]."),
        path: str | None = typer.Option(None, help="Model path (InfiniLM-Rust: its config file)."),
        command: str | None = typer.Option(
            None, help="Command line for --service-type command (shlex-split)."
        ),
        args: str | None = typer.Option(None, help='Extra backend arguments, shlex-split: --args "--x 1".'),
        work_dir: str | None = typer.Option(None, help="Working directory of the backend."),
        env: list[str] | None = typer.Option(None, "--env", help="K=V for the backend (repeatable)."),
        models: str | None = typer.Option(
            None, help="Served model names a,b (the first is the engine's alias)."
        ),
        health_path: str | None = typer.Option(None, help="Readiness path on the backend [preset's]."),
        max_concurrency: int | None = typer.Option(None, help="Published for routers (requests at once)."),
        registry_url: str | None = typer.Option(
            None,
            "--registry-url",
            "--registry",
            help="Registry to join; several sharing one Redis: a,b (tried in order).",
        ),
        registry_token: str | None = typer.Option(
            None, envvar="CORRAL_REGISTRY_TOKEN", help="Bearer token for registry writes."
        ),
        router_url: str | None = typer.Option(
            None, "--router-url", "--router", help="Router told add_worker/remove_worker directly."
        ),
        router_token: str | None = typer.Option(
            None, envvar="CORRAL_ROUTER_TOKEN", help="Bearer token for the router's admin routes."
        ),
        gpus: str | None = typer.Option(
            None, help="GPU indices for the backend, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES)."
        ),
        gpu_release_timeout: float | None = typer.Option(
            None, help="Seconds to wait for the old backend's GPU memory before a restart [60]."
        ),
        max_restarts: int | None = typer.Option(None, help="Restarts before giving up [10000]."),
        restart_delay: float | None = typer.Option(None, help="Seconds between a crash and the restart [5]."),
        heartbeat_interval: float | None = typer.Option(
            None, help="Registry heartbeat seconds; lease 3x [30]."
        ),
        start_timeout: float | None = typer.Option(None, help="Seconds to become ready [preset's]."),
        state_dir: str | None = typer.Option(None, help="Pid file and backend log directory [.corral]."),
        admin_token: str | None = typer.Option(
            None, envvar="CORRAL_SITTER_ADMIN_TOKEN", help="Bearer token for POST /start /stop /restart."
        ),
        config_file: str | None = typer.Option(None, help="TOML file with the same keys (flags override)."),
        log_level: str = typer.Option("info", help="debug, info, warning or error."),
    ) -> None:
        """Start a backend, keep it alive, register it, and serve /health /models /info /logs on port + 1."""
        from corral.sitter.main import main

        flags: dict[str, Any] = {
            "name": name,
            "host": host,
            "advertise_host": advertise_host,
            "port": port,
            "service_type": service_type,
            "path": path,
            "command": command,
            "args": args,
            "work_dir": work_dir,
            "env": env,
            "models": models,
            "health_path": health_path,
            "max_concurrency": max_concurrency,
            "registry_url": registry_url,
            "registry_token": registry_token,
            "router_url": router_url,
            "router_token": router_token,
            "gpus": gpus,
            "gpu_release_timeout": gpu_release_timeout,
            "max_restarts": max_restarts,
            "restart_delay": restart_delay,
            "heartbeat_interval": heartbeat_interval,
            "start_timeout": start_timeout,
            "state_dir": state_dir,
            "admin_token": admin_token,
        }
        raise typer.Exit(main(flags, config_file, log_level))
