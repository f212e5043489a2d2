"""The multi-host fleet on a :class:`lan.Lan`: what runs on which host, and how to look at it.

    a       redis-server, registry A (Redis store), router A (watches A, then B)
    b       registry B on the same Redis, router B (watches B, then A)
    c       sitter + mock serving ``m``, sitter + mock serving ``c``
    d       sitter + mock serving ``m``
    client  this test process (openai SDK)

Sitters heartbeat every second (lease 3 s) to registry A, failing over to B. Between hosts
everything is HTTPS (registries, routers, sitter APIs; a throwaway CA from ``certs``) and
carries tokens; Redis and the mock backends stay plain (see docs/multihost.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from certs import make_ca, make_cert
from lan import Lan

HOSTS = ["a", "b", "c", "d", "client"]
REGISTRY_PORT, ROUTER_PORT, REDIS_PORT = 18000, 8000, 6379
API_KEY = "sk-multihost-client-key"
ADMIN_TOKEN = "multihost-admin-token"
REGISTRY_TOKEN = "multihost-registry-token"
SITTER_TOKEN = "multihost-sitter-admin-token"
LAUNCHER_TOKEN = "multihost-launcher-token"
SECRETS = (API_KEY, ADMIN_TOKEN, REGISTRY_TOKEN, SITTER_TOKEN, LAUNCHER_TOKEN)
HEARTBEAT_S, LEASE_S = 1.0, 3.0
CONNECT_TIMEOUT_S = 1.0  # the router's default [router.timeouts] connect
# name -> (host, port, model)
BACKENDS = {"m-c": ("c", 8100, "m"), "c-c": ("c", 8200, "c"), "m-d": ("d", 8100, "m")}


@dataclass
class Fleet:
    """Starts and inspects the processes of every host."""

    net: Lan
    dir: Path
    figures: dict[str, Any] = field(default_factory=dict)
    _http: httpx.Client | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ca: Path | None = None
    certs: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def make_certs(self) -> None:
        """A CA and a certificate per server host (a, b, c, d) for its LAN address."""
        tls = self.dir / "tls"
        self.ca = make_ca(tls)
        for h in ("a", "b", "c", "d"):
            self.certs[h] = make_cert(tls, h, self.net.addr[h])

    def tls_args(self, host: str) -> list[str]:
        cert, key = self.certs[host]
        return ["--tls-cert", str(cert), "--tls-key", str(key)]

    def ssl_context(self) -> ssl.SSLContext:
        """What the clients trust: the test CA only."""
        return ssl.create_default_context(cafile=str(self.ca))

    # -- addresses -------------------------------------------------------------------------
    def registry(self, host: str) -> str:
        return f"https://{self.net.addr[host]}:{REGISTRY_PORT}"

    def router(self, host: str) -> str:
        return f"https://{self.net.addr[host]}:{ROUTER_PORT}"

    def backend_url(self, name: str) -> str:
        host, port, _ = BACKENDS[name]
        return f"http://{self.net.addr[host]}:{port}"

    # -- processes -------------------------------------------------------------------------
    def corral(
        self, host: str, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        p = self.procs[name] = self.net.start(host, [sys.executable, "-m", "corral", *args], name, env)
        return p

    def start_redis(self) -> subprocess.Popen[bytes]:
        exe = shutil.which("redis-server") or "redis-server"
        argv = [
            exe,
            "--bind",
            self.net.addr["a"],
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        argv += ["--protected-mode", "no", "--dir", str(self.dir)]
        p = self.procs["redis"] = self.net.start("a", argv, "redis")
        return p

    def start_registry(self, host: str) -> subprocess.Popen[bytes]:
        store = f"redis://{self.net.addr['a']}:{REDIS_PORT}/0"
        return self.corral(
            host,
            f"registry-{host}",
            "registry",
            "--host",
            self.net.addr[host],
            "--port",
            str(REGISTRY_PORT),
            "--store",
            store,
            *self.tls_args(host),
            env={"CORRAL_REGISTRY_TOKEN": REGISTRY_TOKEN},
        )

    def start_router(self, host: str, first: str, then: str) -> subprocess.Popen[bytes]:
        cfg = self.dir / f"router-{host}.toml"
        cfg.write_text(f'[router]\nadmin_token = "{ADMIN_TOKEN}"\n')
        return self.corral(
            host,
            f"router-{host}",
            "router",
            "--host",
            self.net.addr[host],
            "--port",
            str(ROUTER_PORT),
            "--registry-url",
            f"{self.registry(first)},{self.registry(then)}",
            "--config",
            str(cfg),
            *self.tls_args(host),
            "--ca",
            str(self.ca),
            env={"CORRAL_API_KEYS": API_KEY},
        )

    def start_sitter(self, name: str) -> subprocess.Popen[bytes]:
        host, port, model = BACKENDS[name]
        state = self.dir / f"state-{host}"
        state.mkdir(exist_ok=True)
        return self.corral(
            host,
            f"sitter-{name}",
            "sit",
            "--name",
            name,
            "--host",
            "0.0.0.0",  # the advertised address is derived: the route towards the registry
            "--port",
            str(port),
            "--service-type",
            "mock",
            "--models",
            model,
            "--args",
            "--ttft-ms 5 --max-tokens 4",
            "--registry-url",
            f"{self.registry('a')},{self.registry('b')}",
            "--heartbeat-interval",
            str(HEARTBEAT_S),
            "--restart-delay",
            "0.2",
            "--state-dir",
            str(state),
            "--log-level",
            "debug",
            *self.tls_args(host),
            "--ca",
            str(self.ca),
            env={"CORRAL_REGISTRY_TOKEN": REGISTRY_TOKEN, "CORRAL_SITTER_ADMIN_TOKEN": SITTER_TOKEN},
        )

    def start_worker_host(self, host: str) -> subprocess.Popen[bytes]:
        """``corral up`` on a worker host: a config whose registry is elsewhere runs only the
        host's own sitters and backends (docs/multihost.md)."""
        names = [n for n, (h, _, _) in BACKENDS.items() if h == host]
        cfg = self.dir / f"corral-{host}.toml"
        lines = [
            "[corral]",
            'host = "0.0.0.0"',
            f'state_dir = "{self.dir / f"launcher-{host}"}"',
            f'ca = "{self.ca}"',
            f'token = "{LAUNCHER_TOKEN}"',
            "[registry]",
            f'url = ["{self.registry("a")}", "{self.registry("b")}"]',
            f'token = "{REGISTRY_TOKEN}"',
        ]
        for n in names:
            _, port, model = BACKENDS[n]
            lines += [
                "[[backend]]",
                f'name = "{n}"',
                'preset = "mock"',
                f'models = ["{model}"]',
                f"port = {port}",
                'args = ["--ttft-ms", "5", "--max-tokens", "4"]',
                f"heartbeat_interval = {HEARTBEAT_S}",
                "restart_delay = 0.2",
                f'admin_token = "{SITTER_TOKEN}"',
            ]
        cfg.write_text("\n".join(lines) + "\n")
        return self.corral(host, f"launcher-{host}", "up", "-c", str(cfg))

    def sitter_api(self, name: str) -> str:
        host, port, _ = BACKENDS[name]
        return f"https://{self.net.addr[host]}:{port + 1}"

    def start_all(self) -> None:
        self.make_certs()
        self.start_redis()
        for h in ("a", "b"):
            self.start_registry(h)
        self.start_router("a", "a", "b")
        self.start_router("b", "b", "a")
        for name in BACKENDS:
            if BACKENDS[name][0] == "c":
                self.start_sitter(name)  # C: standalone `corral sit` with TLS on its API
        self.start_worker_host("d")  # D: `corral up` as a worker host

    def kill(self, name: str) -> None:
        """SIGKILL one process (and its group) by the name it was started under."""
        p = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)

    # -- looking ---------------------------------------------------------------------------
    @property
    def http(self) -> httpx.Client:
        """One keep-alive client for looking (a poll is one request, not a new connection)."""
        if self._http is None:
            self._http = httpx.Client(timeout=3, verify=self.ssl_context())
        return self._http

    def workers(self, router_host: str) -> list[dict[str, Any]]:
        r = self.http.get(
            self.router(router_host) + "/workers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        r.raise_for_status()
        doc = r.json()
        return list(doc.get("workers", doc) if isinstance(doc, dict) else doc)

    def routable(self, router_host: str, model: str) -> set[str]:
        """URLs of the instances of ``model`` the router would send to now."""
        return {
            w["url"]
            for w in self.workers(router_host)
            if model in w["models"] and w["healthy"] and w["circuit"] != "open"
        }

    def backends(self, registry_host: str = "a") -> list[str]:
        """The URLs of the backend instances the registry lists (duplicates kept)."""
        return sorted(i["url"] for i in self.instances(registry_host) if i["kind"] == "backend")

    def instances(self, registry_host: str = "a") -> list[dict[str, Any]]:
        r = self.http.get(self.registry(registry_host) + "/v1/instances")
        r.raise_for_status()
        return list(r.json()["data"])

    def served_by(self, router_host: str) -> dict[str, int]:
        """Requests the router proxied, per backend URL (from its /metrics)."""
        text = self.http.get(self.router(router_host) + "/metrics").text
        out: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("corral_router_requests_total{"):
                labels, value = line.rsplit(" ", 1)
                inst = labels.split('instance="', 1)[1].split('"', 1)[0]
                out[inst] = out.get(inst, 0) + int(float(value))
        return out

    def client(self, router_host: str, timeout: float = 15) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.router(router_host) + "/v1",
            api_key=API_KEY,
            max_retries=0,
            http_client=httpx.Client(timeout=timeout, verify=self.ssl_context()),
        )

    def fleet_ready(self) -> bool:
        """Both routers route ``m`` to C and D and ``c`` to C."""
        return all(self.ready_on(h) for h in ("a", "b"))

    def ready_on(self, router_host: str) -> bool:
        """``router_host`` routes ``m`` to C and D and ``c`` to C (one request)."""
        want = {"m": {self.backend_url("m-c"), self.backend_url("m-d")}, "c": {self.backend_url("c-c")}}
        got: dict[str, set[str]] = {"m": set(), "c": set()}
        for w in self.workers(router_host):
            if w["healthy"] and w["circuit"] != "open":
                for m in w["models"]:
                    got.setdefault(m, set()).add(w["url"])
        return got == want


@dataclass
class Result:
    started: float
    seconds: float
    router: str
    error: str | None


class Load:
    """Threads sending ``model`` requests through both routers in turn until stopped."""

    def __init__(self, fleet: Fleet, model: str = "m", threads: int = 2) -> None:
        self.fleet, self.model, self.threads = fleet, model, threads
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _run(self, i: int) -> None:
        clients = {h: self.fleet.client(h) for h in ("a", "b")}
        n = i
        while not self._stop.is_set():
            host = "a" if n % 2 == 0 else "b"
            n += 1
            t0 = time.monotonic()
            err: str | None = None
            try:
                clients[host].chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )
            except openai.APIError as exc:
                err = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.results.append(Result(t0, time.monotonic() - t0, host, err))
            time.sleep(0.02)  # a steady, modest rate (the machine is shared)
        for c in clients.values():
            c.close()

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)
        ]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def failed(self) -> list[Result]:
        return [r for r in self.results if r.error]

    def count_since(self, t: float) -> int:
        with self._lock:
            return sum(1 for r in self.results if r.started >= t)

    def summary(self) -> dict[str, Any]:
        lat = sorted(r.seconds for r in self.results)
        return {
            "requests": len(lat),
            "failed": len(self.failed()),
            "max_s": round(lat[-1], 3) if lat else None,
            "p50_s": round(lat[len(lat) // 2], 4) if lat else None,
        }
