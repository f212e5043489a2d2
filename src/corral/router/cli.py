"""``corral router``: flags (and an optional TOML ``[router]`` table) -> RouterSettings -> run."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``router`` command to the corral CLI."""

    @app.command("router")
    def router_cmd(
        host: str = typer.Option(None, "--host", help="Bind address [default: 127.0.0.1]."),
        port: int = typer.Option(None, "--port", help="Port [default: 8000]."),
        registry_url: str = typer.Option(
            None,
            "--registry-url",
            help="Watch this corral registry; several sharing one Redis: a,b (fails over in order).",
        ),
        worker_url: list[str] = typer.Option(None, "--worker-url", help="A static worker (repeatable)."),
        policy: str = typer.Option(
            None,
            "--policy",
            help="round_robin | least_outstanding (default) | power_of_two | prefix_affinity.",
        ),
        api_keys_env: str = typer.Option(
            None, "--api-keys-env", help="Env var with comma-separated API keys [default: CORRAL_API_KEYS]."
        ),
        admin_token: str = typer.Option(None, "--admin-token", help="Token for the admin routes."),
        config: Path = typer.Option(None, "--config", help="TOML file with a [router] table."),
    ) -> None:
        """Route OpenAI-compatible requests to healthy backend instances."""
        from corral.router import policies
        from corral.router.app import run
        from corral.router.config import load_settings

        settings = load_settings(
            config,
            {
                "host": host,
                "port": port,
                "registry_url": registry_url,
                "workers": list(worker_url or []),
                "policy": policy,
                "api_keys_env": api_keys_env,
                "admin_token": admin_token,
            },
        )
        policies.load(settings.policy)  # unknown policy: one-line error before binding
        run(settings)
