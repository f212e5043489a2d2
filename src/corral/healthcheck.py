"""The container image's HEALTHCHECK: probe whatever corral role PID 1 runs, stdlib only.

One image serves every role (``corral up|router|registry|sit|mock``), so the check reads PID 1's
command line to learn the role, its port and its host, and GETs that role's health path. It runs
every few seconds in every container, hence no pydantic/corral imports (they cost ~0.3 s of CPU
each time); ``tests/unit/test_healthcheck.py`` keeps the defaults below equal to corral's own.
``CORRAL_HEALTH_URL`` overrides the guess (for a port set in a config file, say).

Exit 0 when the probe answers 2xx, 1 otherwise (what Docker and podman expect).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

# role -> (default port, health path, port offset from --port). A sitter serves on --port + 1.
ROLES: dict[str, tuple[int, str, int]] = {
    "router": (8000, "/health", 0),
    "registry": (18000, "/health", 0),
    "up": (8080, "/api/health", 0),
    "mock": (8100, "/health", 0),
    "sit": (0, "/health", 1),
}
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}
TIMEOUT_S = 3.0


def _option(argv: list[str], *names: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` (the last one wins, as with typer)."""
    found = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                found = argv[i + 1]
            elif arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


def health_url(argv: list[str]) -> str | None:
    """The health URL of the corral role in ``argv`` (a full command line), or None if unknown."""
    role_at = next((i for i, a in enumerate(argv) if a in ROLES), None)
    if role_at is None:
        return None
    role = argv[role_at]
    rest = argv[role_at + 1 :]
    default_port, path, offset = ROLES[role]
    port_s = _option(rest, "--port", "-p") if role != "up" else None
    if port_s is None and not default_port:
        return None
    try:
        port = int(port_s) + offset if port_s is not None else default_port
    except ValueError:
        return None
    host = _option(rest, "--host") if role != "up" else None
    if host is None or host in _WILDCARDS:
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{host}:{port}{path}"


def _pid1_argv() -> list[str]:
    raw = Path("/proc/1/cmdline").read_bytes()
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def main() -> int:
    """Probe the health URL once; print why on failure."""
    url = os.environ.get("CORRAL_HEALTH_URL") or health_url(_pid1_argv())
    if url is None:
        print("healthcheck: cannot tell the corral role of PID 1; set CORRAL_HEALTH_URL", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return 0 if 200 <= resp.status < 300 else 1
    except urllib.error.HTTPError as exc:
        print(f"healthcheck: {url} -> {exc.code}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
