"""`corral registry`: the service registry server."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``registry`` command to the corral CLI."""

    @app.command("registry")
    def registry(
        host: str = typer.Option("127.0.0.1", help="Address to listen on."),
        port: int = typer.Option(18000, help="Port to listen on."),
        token: str | None = typer.Option(
            None,
            envvar="CORRAL_REGISTRY_TOKEN",
            show_envvar=True,
            help="Bearer token required for writes (reads stay open).",
        ),
        state_dir: Path | None = typer.Option(
            None, help="Directory for registry-snapshot.json (kept across restarts)."
        ),
        store: str = typer.Option(
            "memory",
            help="Storage: 'memory', or 'redis://host:port/db[?prefix=P]' shared by several registries.",
        ),
        history: int = typer.Option(
            10_000, min=1, help="Changes kept so that a reconnecting watcher resumes without a snapshot."
        ),
        tls_cert: str | None = typer.Option(None, help="PEM certificate: serve HTTPS (with --tls-key)."),
        tls_key: str | None = typer.Option(None, help="PEM private key of --tls-cert."),
        log_level: str = typer.Option("info", help="debug, info, warning or error."),
    ) -> None:
        """Run the service registry: instances register with a lease, heartbeat, and are watched."""
        from corral.registry.server import serve

        serve(
            host=host,
            port=port,
            token=token,
            state_dir=state_dir,
            store_url=store,
            log_level=log_level,
            history=history,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
