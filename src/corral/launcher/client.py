"""How the CLI talks to a running launcher: find it via ``launcher.json``, call its control API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from corral.config import Plan
from corral.errors import CorralError
from corral.launcher.state import StateDir, read_info


class NotRunning(CorralError):
    """No launcher runs for this state dir."""


class ControlClient:
    """A tiny synchronous client of the control API (stdlib only: the CLI must start fast)."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def for_plan(cls, plan: Plan) -> ControlClient:
        """The client of the launcher running for ``plan``'s state dir; NotRunning if none."""
        info = read_info(StateDir(plan.state_dir))
        if info is None:
            raise NotRunning(
                f"corral is not running (no live launcher for {plan.state_dir}); start it with corral up"
            )
        host = info["host"]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        host = f"[{host}]" if ":" in host else host
        return cls(f"http://{host}:{info['port']}", plan.token)

    def request(self, method: str, path: str, timeout: float | None = None) -> Any:
        """JSON of ``METHOD path``; CorralError with the API's message on an error status."""
        req = urllib.request.Request(
            self.base_url + path, method=method, data=b"" if method == "POST" else None
        )
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                msg = exc.reason
            raise CorralError(f"{method} {path}: {exc.code} {msg}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise CorralError(f"cannot reach the launcher at {self.base_url}: {exc}") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, timeout: float | None = None) -> Any:
        return self.request("POST", path, timeout)
