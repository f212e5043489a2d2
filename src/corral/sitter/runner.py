"""One sitter: supervise one backend, publish its state, serve the port + 1 API, stop cleanly.

Tasks, all on one event loop: the supervisor's own task (proc), ``_follow`` (turns supervisor
events into registry pushes and router membership), the registration loop, the router link,
the model watcher, the start-progress logger and the aiohttp.web API. Signal handlers only set an event;
``run`` then deregisters, stops the backend tree and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import time
from typing import Any

from corral.errors import SpawnError
from corral.proc import Supervisor
from corral.proc.events import State, StateEvent
from corral.proc.tree import port_holder
from corral.settings.addresses import advertised_host
from corral.sitter.api import serve
from corral.sitter.backend import health_path, instance_id, probe_host, process_spec, url
from corral.sitter.config import SitterConfig
from corral.sitter.drain import drain
from corral.sitter.genprobe import GenerationProber
from corral.sitter.gpu_gate import GpuGate
from corral.sitter.identity import claim_port_holder
from corral.sitter.models import ModelWatcher
from corral.sitter.registration import RegistryLink
from corral.sitter.router_link import RouterLink
from corral.tls import client_context, scheme, server_context

log = logging.getLogger("corral.sitter")

# What the registry is told for each supervisor state: a crashed backend is "unhealthy" at once
# (routers drop it) even while the supervisor waits out the restart delay.
_WIRE_STATE = {State.RESTARTING: "unhealthy"}
PROGRESS_EVERY_S = 15.0


class Sitter:
    """Supervises ``cfg``'s backend and keeps the registry and router told about it."""

    def __init__(self, cfg: SitterConfig) -> None:
        self.cfg = cfg
        self.preset = cfg.preset
        self.spec = process_spec(cfg)
        self.gpu_gate = GpuGate(cfg.gpus, cfg.gpu_release_timeout) if cfg.gpus else None
        self.supervisor = Supervisor(self.spec, before_restart=self.gpu_gate, on_line=_echo)
        self.backend_url = url(probe_host(cfg.host), cfg.port)
        public = advertised_host(cfg)
        self.public_backend_url = url(public, cfg.port)
        self.tls = server_context(cfg.tls_cert, cfg.tls_key)
        self.client_ssl = client_context(cfg.ca)
        self.public_sitter_url = url(public, cfg.sitter_port, scheme(self.tls is not None))
        self.started_at = time.time()
        self.models = self.preset.model_names(cfg.launch_request())
        self.max_concurrency = cfg.max_concurrency or self.preset.default_max_concurrency
        self.stopping = asyncio.Event()
        self.backend_id = instance_id(cfg.service_name, public, cfg.port)
        self.sitter_id = instance_id(f"{cfg.service_name}-sitter", public, cfg.sitter_port)
        self.registration = self._registration() if cfg.registry_url else None
        self.router = (
            RouterLink(cfg.router_url, self.public_backend_url, cfg.router_token, self.client_ssl)
            if cfg.router_url
            else None
        )
        self.watcher = ModelWatcher(self.backend_url, self._ready, self._on_models)
        self.genprobe = self._generation_probe()
        self._control_lock = asyncio.Lock()

    # ----- views used by the HTTP API -------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The /health body: sitter and backend state, pid, restarts, reason."""
        sup = self.supervisor
        body: dict[str, Any] = {
            "status": "healthy" if sup.state == State.HEALTHY else str(sup.state),
            "sitter": "stopping" if self.stopping.is_set() else "running",
            "sitter_pid": _own_pid(),
            "backend": str(sup.state),
            "pid": sup.pid,
            "restarts": sup.restarts,
            "reason": sup.reason,
            "last_exit": sup.last_exit,
            "started_at": sup.started_at if sup.pid else None,
            "ready_s": sup.ready_s,  # the engine's own start, last time: spawn to ready
            # Informational: /health stays the process's health (the launcher's liveness probe
            # must not kill a sitter whose backend cannot generate); routers learn it from the
            # registry state (unhealthy, out_reason generation_probe_failed).
            "generation_probe": self.genprobe.status() if self.genprobe else None,
        }
        if sup.state == State.FAILED:
            body["last_lines"] = sup.last_lines  # the backend's own last output, for status views
        return body

    def info(self) -> dict[str, Any]:
        """The /info body."""
        proc = self.supervisor.info()
        return {
            "name": self.cfg.service_name,
            "service_type": self.preset.name,
            "argv": self.spec.argv,
            "cwd": self.spec.cwd,
            "backend_url": self.public_backend_url,
            "sitter_url": self.public_sitter_url,
            "health_url": self.backend_url + health_path(self.cfg),
            "models": self.models,
            "max_concurrency": self.max_concurrency,
            "gpus": self.cfg.gpus,
            "cuda_visible_devices": self.spec.env.get("CUDA_VISIBLE_DEVICES"),
            "gpu_release_wait_s": self.gpu_gate.last_wait_s if self.gpu_gate else None,
            "gpu_release": self.gpu_gate.status() if self.gpu_gate else None,
            "sitter_pid": _own_pid(),
            "sitter_uptime_s": round(time.time() - self.started_at, 3),
            **{k: v for k, v in proc.items() if k != "name"},
            "state": str(self.supervisor.state),
            "registry": self.registration.status() if self.registration else None,
            "router": (
                {
                    "url": self.router.router_url,
                    "member": self.router.member,
                    "last_error": self.router.last_error,
                }
                if self.router
                else None
            ),
            "log_file": str(self.spec.log_file),
            "pid_file": str(self.spec.pid_file),
        }

    async def control(self, action: str) -> None:
        """Admin start / stop / restart of the backend (one at a time)."""
        async with self._control_lock:
            sup = self.supervisor
            if action == "start" and sup.state in (State.STOPPED, State.FAILED):
                await sup.start()
            elif action == "stop":
                await sup.stop()
            elif action == "restart":
                await sup.restart()

    # ----- life cycle -----------------------------------------------------------------------
    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then deregister, stop the backend and return 0."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        sock = self._bind()
        events = self.supervisor.subscribe()  # before start: no event may be missed
        tasks = [
            asyncio.create_task(serve(self, sock, self.tls), name="http"),
            asyncio.create_task(self._follow(events), name="follow"),
            asyncio.create_task(self.watcher.run(), name="models"),
            asyncio.create_task(self._progress(), name="progress"),
        ]
        if self.registration:
            # A parked engine is not registered until it first starts: a router must not list
            # the model before the launcher's on-demand entry says how to wake it.
            self.registration.start(backend=not self.cfg.park)
        if self.router:
            tasks.append(asyncio.create_task(self.router.run(), name="router"))
        if self.genprobe:
            tasks.append(asyncio.create_task(self.genprobe.run(), name="genprobe"))
        log.info(
            "sitter %s on %s: %s backend at %s: %s",
            self.cfg.service_name,
            self.public_sitter_url,
            self.preset.name,
            self.public_backend_url,
            " ".join(self.spec.argv),
        )
        try:
            await asyncio.to_thread(claim_port_holder, self.spec)  # before adoption looks at the pid file
            if self.cfg.park:
                log.info("backend parked (on demand): POST /start starts it")
            else:
                await self.supervisor.start()
            stop = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait([stop, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
            if tasks[0] in done and not stop.done():
                log.error("the sitter's HTTP server stopped unexpectedly; shutting down")
            stop.cancel()
            await self._shutdown()
        finally:
            for task in tasks:  # the API served through _shutdown (/health said "stopping")
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.registration:
                await self.registration.close()
            close = getattr(events, "close", None)
            if close is not None:
                close()
            sock.close()
        return 0

    async def _shutdown(self) -> None:
        """Leave rotation first (no new traffic), then stop the backend tree."""
        log.info("stopping: deregistering, then stopping the backend")
        leaving = []
        if self.registration:
            leaving.append(self.registration.leave())
        if self.router:
            leaving.append(self.router.leave())
        await asyncio.gather(*leaving)
        if self.cfg.drain_timeout_s and self.supervisor.state == State.HEALTHY:
            waited = await drain(self.backend_url, self.cfg.drain_timeout_s, self.client_ssl)
            if waited >= 0.5:
                log.info("drained: the engine's requests finished in %.1f s", waited)
        await self.supervisor.stop()
        log.info("backend stopped; sitter exiting")

    def _bind(self) -> socket.socket:
        host = self.cfg.host or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, self.cfg.sitter_port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                holder = port_holder(self.cfg.sitter_port, probe_host(host))
                who = f" (held by pid {holder[0]}: {holder[1]})" if holder else ""
                raise SpawnError(f"sitter port {self.cfg.sitter_port} (port + 1) is in use{who}") from None
            raise SpawnError(f"cannot listen on {host}:{self.cfg.sitter_port}: {exc.strerror}") from None
        sock.listen(128)
        sock.set_inheritable(False)
        return sock

    def _registration(self) -> RegistryLink:
        assert self.cfg.registry_url
        meta: dict[str, Any] = {"preset": self.preset.name, "sitter_url": self.public_sitter_url}
        if self.max_concurrency is not None:
            meta["max_concurrency"] = self.max_concurrency
        if self.cfg.gpus:
            meta["gpus"] = self.cfg.gpus
        backend = {
            "id": self.backend_id,
            "url": self.public_backend_url,
            "models": list(self.models),
            "metadata": meta,
            "state": "stopped" if self.cfg.park else "starting",
        }
        sitter = {
            "id": self.sitter_id,
            "url": self.public_sitter_url,
            "state": "healthy",
            "metadata": {"backend_id": self.backend_id, "preset": self.preset.name},
        }
        return RegistryLink(
            self.cfg.registry_urls,
            service=self.cfg.service_name,
            backend=backend,
            sitter=sitter,
            heartbeat_s=self.cfg.heartbeat_interval,
            token=self.cfg.registry_token,
            ssl=self.client_ssl,
        )

    def _generation_probe(self) -> GenerationProber | None:
        gp = self.cfg.generation_probe
        if not (self.preset.generation_probe if gp.enabled is None else gp.enabled):
            return None
        return GenerationProber(
            gp,
            self.backend_url,
            lambda: self.models[0] if self.models else "",
            self.preset.busy_metric,
            self._ready,
            self._on_generation,
            lambda: self.control("restart"),
            self.cfg.ca,
        )

    def _on_generation(self, ok: bool) -> None:
        """The generation probe changed its mind: tell the registry and the router at once."""
        if self.registration:
            self.registration.update_backend(
                state="healthy" if ok else "unhealthy",
                metadata={"out_reason": None if ok else "generation_probe_failed"},
            )
        if self.router:
            self.router.want(ok)

    # ----- reacting to the backend ----------------------------------------------------------
    def _ready(self) -> bool:
        return self.supervisor.state == State.HEALTHY

    def _on_models(self, models: list[str]) -> None:
        self.models = models
        if self.registration:
            self.registration.update_backend(models=models)

    async def _follow(self, events: Any) -> None:
        async for ev in events:
            self._on_event(ev)

    def _on_event(self, ev: StateEvent) -> None:
        why = f" ({ev.reason})" if ev.reason else ""
        log.info("backend %s -> %s pid=%s restarts=%s%s", ev.previous, ev.state, ev.pid, ev.restarts, why)
        healthy = ev.state == State.HEALTHY
        if self.genprobe is not None and not healthy:
            self.genprobe.reset()  # a restart or a stop: the next process starts with a clean record
        out = self.genprobe is not None and self.genprobe.out
        if self.registration:
            meta: dict[str, Any] = {
                "pid": ev.pid,
                "restarts": ev.restarts,
                "process_state": str(ev.state),
                "reason": ev.reason,  # None clears a stale reason
            }
            if self.gpu_gate is not None and self.gpu_gate.last is not None:
                meta["gpu_release_wait_s"] = self.gpu_gate.last_wait_s
            state = _WIRE_STATE.get(ev.state, str(ev.state))
            if out:  # healthy by its probes, but it cannot generate: stays out
                state, meta["out_reason"] = "unhealthy", "generation_probe_failed"
            else:
                meta["out_reason"] = None
            self.registration.update_backend(state=state, metadata=meta)
            self.registration.start_backend()
        if self.router:
            self.router.want(healthy and not out)
        if healthy:
            self.watcher.refresh()

    async def _progress(self) -> None:
        """While a slow model loads, say so in the log now and then (with the last log line)."""
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            sup = self.supervisor
            if sup.state == State.STARTING and sup.started_at:
                waited = time.time() - sup.started_at
                last = sup.tail(1)
                log.info(
                    "still waiting for %s%s (%.0f s, timeout %.0f s)%s",
                    self.backend_url,
                    health_path(self.cfg),
                    waited,
                    self.spec.start_timeout_s,
                    f"; last log line: {last[-1].strip()[:200]}" if last else "",
                )


def _echo(line: str) -> None:
    """The backend's output line on our stdout, so `corral logs`, the launcher's foreground
    stream and the dashboard show the engine's own words; supervisor notes (``[corral] ...``)
    are skipped, the sitter's log already has them."""
    if line.startswith("[corral] "):
        return
    with contextlib.suppress(OSError):  # a closed stdout must not stop log capture
        os.write(1, (line + "\n").encode("utf-8", "replace"))


def _own_pid() -> int:
    return os.getpid()
