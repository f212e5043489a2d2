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
            help="round_robin | least_outstanding | power_of_two | prefix_affinity"
            " [default: least_outstanding].",
        ),
        api_keys_env: str = typer.Option(
            None,
            "--api-keys-env",
            help="Env var with comma-separated client API keys; when given, the router refuses to"
            " start while it holds none. Not given: CORRAL_API_KEYS is read, and may be unset.",
        ),
        allow_no_auth: bool = typer.Option(
            False, "--allow-no-auth", help="Start even when --api-keys-env holds no key (no auth)."
        ),
        admin_token: str = typer.Option(None, "--admin-token", help="Token for the admin routes."),
        processes: int = typer.Option(
            None,
            "--workers",
            "--processes",
            min=1,
            help="Router processes on the port (SO_REUSEPORT), each with its own registry watch; "
            "/metrics sums them [1; config: processes].",
        ),
        tls_cert: str = typer.Option(
            None, "--tls-cert", help="PEM certificate: serve HTTPS (with --tls-key)."
        ),
        tls_key: str = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
        ca: str = typer.Option(None, "--ca", help="PEM CA bundle to verify the registry (https) with."),
        config: Path = typer.Option(None, "--config", help="TOML file with a [router] table."),
        max_body_bytes: int = typer.Option(
            None, "--max-body-bytes", help="Request body limit; 413 past it [default: 32 MiB]."
        ),
        max_head_bytes: int = typer.Option(
            None, "--max-head-bytes", help="Request line + headers limit; 431 past it [default: 64 KiB]."
        ),
        head_timeout: float = typer.Option(
            None, "--head-timeout", help="Seconds for a request head to arrive; 408 [default: 60; 0: none]."
        ),
        body_timeout: float = typer.Option(
            None, "--body-timeout", help="Seconds between reads of a request body; 408 [default: 60]."
        ),
        keepalive_timeout: float = typer.Option(
            None, "--keepalive-timeout", help="Seconds an idle keep-alive connection is kept [default: 75]."
        ),
        max_pipelined: int = typer.Option(
            None, "--max-pipelined", help="Requests queued per connection, then reading pauses [default: 16]."
        ),
        max_connections: int = typer.Option(
            None, "--max-connections", help="Open client connections; 503 past it [default: 0 = no cap]."
        ),
        drain_timeout: float = typer.Option(
            None, "--drain-timeout", help="SIGTERM: seconds to finish requests in flight [default: 30]."
        ),
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
                "allow_no_auth": allow_no_auth or None,
                "admin_token": admin_token,
                "processes": processes,
                "tls_cert": tls_cert,
                "tls_key": tls_key,
                "ca": ca,
                "max_body_bytes": max_body_bytes,
                "drain_timeout_s": drain_timeout,
                "limits.max_head_bytes": max_head_bytes,
                "limits.head_timeout_s": head_timeout,
                "limits.body_timeout_s": body_timeout,
                "limits.keepalive_timeout_s": keepalive_timeout,
                "limits.max_pipelined": max_pipelined,
                "limits.max_connections": max_connections,
            },
        )
        policies.load(settings.policy)  # unknown policy: one-line error before binding
        from corral.tls import client_context, server_context

        server_context(settings.tls_cert, settings.tls_key)  # bad files: one-line error, too
        client_context(settings.ca)
        run(settings)

    keys = typer.Typer(help="API keys for the router: make one, store its hash.", no_args_is_help=True)
    app.add_typer(keys, name="keys")

    @keys.command("new")
    def keys_new_cmd(
        name: str = typer.Argument(..., help="The key's name (shown in metrics, usage and logs)."),
        models: list[str] = typer.Option(
            None, "--models", help="Model globs it may use, e.g. 'llama-*' (repeatable) [default: all]."
        ),
        rpm: int = typer.Option(None, "--rpm", help="Requests per minute."),
        tpm: int = typer.Option(None, "--tpm", help="Tokens per minute (prompt + completion)."),
        max_concurrency: int = typer.Option(None, "--max-concurrency", help="Requests in flight at once."),
        priority: int = typer.Option(None, "--priority", help="Queue priority, lower first [default: 0]."),
        expires: str = typer.Option(None, "--expires", help="Expiry, ISO date or time (UTC unless given)."),
        file: Path = typer.Option(
            None, "--file", help="Keys file (.toml or .json) to add the hash to; without it, print a block."
        ),
    ) -> None:
        """Make a new API key: print the key once, store only its sha256."""
        from corral.router.keys_cli import keys_new

        fields = {
            "models": [p.strip() for m in models or [] for p in m.split(",") if p.strip()] or None,
            "rpm": rpm,
            "tpm": tpm,
            "max_concurrency": max_concurrency,
            "priority": priority,
            "expires": expires,
        }
        typer.echo(keys_new(name, {k: v for k, v in fields.items() if v is not None}, file))
