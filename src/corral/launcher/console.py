"""The foreground launcher's terminal: a banner, a live status table and prefixed log lines."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from corral.config import Plan

if TYPE_CHECKING:
    from rich.table import Table

    from corral.launcher.orchestrator import Orchestrator

_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green")


def banner(plan: Plan) -> str:
    """Where things are and how to call them: router URL, curl, the openai SDK, the dashboard.

    Each command is one line (print it unwrapped: a terminal-wide wrap inside a quoted header
    breaks the pasted command); with client keys configured the key is ``$CORRAL_API_KEY``.
    """
    from corral.launcher.preflight import router_auth

    host = "localhost" if plan.host in ("127.0.0.1", "0.0.0.0", "::") else plan.host
    dash = f"http://{host}:{plan.dashboard_port}/"
    lines = []
    auth = router_auth(plan) if plan.router_url else None
    aliases = list(auth.settings.aliases) if auth else []
    models = [m for p in plan.processes for m in p.models]
    model = models[0] if models else aliases[0] if aliases else "MODEL"
    if plan.router_url:
        url = plan.router_url.replace(plan.host, host, 1)
        names = ", ".join(dict.fromkeys([*models, *aliases])) or "none configured"
        keyed = bool(auth and auth.n_keys)
        header = ' -H "Authorization: Bearer $CORRAL_API_KEY"' if keyed else ""
        body = f'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
        lines += [
            f"router     {url}/v1   (models: {names})",
            f"dashboard  {dash}",
        ]
        if keyed and auth:
            lines.append(f"auth       on: export CORRAL_API_KEY=<one of the keys in ${auth.keys_env}>")
        lines += [
            "",
            "try it:",
            f"  curl -s {url}/v1/chat/completions -H 'Content-Type: application/json'{header} -d '{body}'",
            "",
            *(["  import os"] if keyed else []),
            "  from openai import OpenAI",
            f'  client = OpenAI(base_url="{url}/v1", api_key='
            + ('os.environ["CORRAL_API_KEY"])' if keyed else '"none")'),
            f'  r = client.chat.completions.create(model="{model}", '
            'messages=[{"role": "user", "content": "Hello!"}])',
            "  print(r.choices[0].message.content)",
        ]
    else:
        lines.append(f"dashboard  {dash}")
    return "\n".join(lines)


class Terminal:
    """Prints each process's output with a coloured name prefix above a live status table."""

    def __init__(self, plan: Plan) -> None:
        self.console = Console(highlight=False)
        self.width = max((len(p.name) for p in plan.processes), default=8)
        self.styles = {p.name: _STYLES[i % len(_STYLES)] for i, p in enumerate(plan.processes)}

    def line(self, name: str, text: str) -> None:
        """One output line of ``name`` (must be quick: called from the log follower)."""
        self.console.print(
            Text.assemble((f"{name:>{self.width}} | ", self.styles.get(name, "white")), text.rstrip()),
            soft_wrap=True,
        )

    async def live(self, orch: Orchestrator, stop: asyncio.Event) -> None:
        """Keep a status table at the bottom of the terminal until ``stop`` is set."""
        from rich.live import Live

        from corral.launcher.views import service_view, status_table

        if not self.console.is_terminal:  # piped: the log lines are enough
            await stop.wait()
            return

        def render() -> Table:
            return status_table([service_view(orch, p.name) for p in orch.plan.processes])

        with Live(render(), console=self.console, refresh_per_second=2, transient=True) as live:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                live.update(render())
