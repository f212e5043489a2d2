"""The resolved plan: config -> the exact processes to run, in start order (a pure function).

Replicas, ports, GPUs and placeholders are decided here, and every conflict (unknown dependency,
cycle, port clash, too few GPUs) is a :class:`~corral.errors.ConfigError` before anything runs.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

import tomli_w
from pydantic import ValidationError

from corral.config.gpus import GpuPlanner, GpuShortage, Placement, candidate_inventory
from corral.config.graph import dependency_problem, start_order
from corral.config.models import (
    RESERVED_NAMES,
    BackendConfig,
    Config,
    Dependency,
    ServiceConfig,
)
from corral.config.placeholders import fill
from corral.config.plan_models import Kind, Plan, ProcessPlan
from corral.config.probes import LIVE_PERIOD_S, http_probe, probe_from
from corral.config.router_file import router_file_table
from corral.errors import ConfigError
from corral.gpu.placement import gpu_env
from corral.settings import Probe, SitterSettings
from corral.settings.addresses import check_advertised


# Readiness is polled quickly so `corral up` is fast; liveness slowly so idle costs nothing.
def parks_at_start(start: str, replica: int, keep_warm: int) -> bool:
    """Whether a replica's sitter starts with its engine parked: on demand, beyond keep_warm."""
    return start == "on_demand" and replica >= keep_warm


def _toml_table(name: str, table: dict[str, object]) -> str:
    """``[name]`` with the table's non-None entries (TOML has no null)."""
    return tomli_w.dumps({name: {k: v for k, v in table.items() if v is not None}})


class _Builder:
    """Turns a validated Config into a Plan; holds the bits each step shares."""

    def __init__(self, config: Config, file: str, gpus: list[int] | None, python: str, place: bool) -> None:
        self.c = config
        self.place_gpus = place
        self.file = file
        self.base = Path(file).resolve().parent
        self.host = config.corral.host
        self.python = python
        self.state_dir = (self.base / config.corral.state_dir).resolve()
        self.gpu_override = gpus
        self.gpu_planner: GpuPlanner | None = None  # built (inventory read) only when an entry wants GPUs
        # TLS files are relative to corral.toml, as every path in it: the servers that read them
        # run in other directories.
        co = config.corral
        self.tls_cert, self.tls_key, self.ca = (
            str((self.base / f).resolve()) if f else None for f in (co.tls_cert, co.tls_key, co.ca)
        )
        self.scheme = "https" if self.tls_cert else "http"
        for key, path in (("tls_cert", self.tls_cert), ("tls_key", self.tls_key)):
            if path and not Path(path).is_file():
                raise self.err(f"file not found: {path}", f"corral.{key}")
        reg = config.registry
        self.local_registry = reg.local
        self.registry_url = reg.url or (f"{self.scheme}://{self.host}:{reg.port}" if reg.local else None)
        # A worker host (registry elsewhere) runs no router unless [router] enabled = true says so.
        self.run_router = config.router.enabled and (
            not reg.url or "enabled" in config.router.model_fields_set
        )
        self.router_url = f"{self.scheme}://{self.host}:{config.router.port}" if self.run_router else None
        self.processes: list[ProcessPlan] = []
        self.replicas_of: dict[str, list[str]] = {}

    def err(self, message: str, field: str) -> ConfigError:
        return ConfigError(message, file=self.file, field=field)

    # -- entries --------------------------------------------------------------------------------
    def entries(self) -> list[tuple[str, BackendConfig | ServiceConfig]]:
        out: list[tuple[str, BackendConfig | ServiceConfig]] = []
        seen: dict[str, str] = {}
        tagged: list[tuple[str, BackendConfig | ServiceConfig]] = [
            *((f"backend[{i}]", b) for i, b in enumerate(self.c.backend)),
            *((f"service[{i}]", s) for i, s in enumerate(self.c.service)),
        ]
        for where, e in tagged:
            if e.name in RESERVED_NAMES:
                raise self.err(f"name {e.name!r} is reserved for corral's own processes", f"{where}.name")
            if e.name in seen:
                raise self.err(f"name {e.name!r} is already used by {seen[e.name]}", f"{where}.name")
            seen[e.name] = where
            if e.enabled:
                out.append((where, e))
        return out

    def check_dependencies(self, entries: list[tuple[str, BackendConfig | ServiceConfig]]) -> None:
        builtin = {"registry"} if self.local_registry else set()
        if self.run_router:
            builtin.add("router")
        every = {e.name for e in (*self.c.backend, *self.c.service)}
        problem = dependency_problem(entries, every, builtin)
        if problem is not None:
            raise self.err(*problem)

    # -- replicas -------------------------------------------------------------------------------
    def replica_files(self, where: str, e: BackendConfig | ServiceConfig) -> list[str | None]:
        if e.replicas_from is None:
            return [None] * e.replicas
        pattern = e.replicas_from
        if not os.path.isabs(pattern):
            pattern = str(self.base / pattern)
        files = sorted(glob.glob(pattern))
        if not files:
            raise self.err(f"{e.replicas_from!r} matches no file", f"{where}.replicas_from")
        return list(files)

    def allocate_gpus(self, where: str, e: BackendConfig | ServiceConfig, n: int) -> Placement:
        if (e.gpus is None and not e.gpus_per_replica) or not self.place_gpus:
            return Placement([[] for _ in range(n)])
        from corral.gpu import PlacementError

        if self.gpu_planner is None:
            self.gpu_planner = GpuPlanner(candidate_inventory(self.c.corral.gpus, self.gpu_override))
        field = f"{where}.gpus" if e.gpus is not None else f"{where}.gpus_per_replica"
        try:
            return self.gpu_planner.place(e, n)
        except (GpuShortage, PlacementError) as exc:
            raise self.err(str(exc), field) from None

    # -- processes ------------------------------------------------------------------------------
    def builtin(self) -> None:
        py = [self.python, "-m", "corral"]
        if self.local_registry:
            r = self.c.registry
            argv = [*py, "registry", "--host", self.host, "--port", str(r.port)]
            argv += ["--state-dir", str(self.state_dir / "registry")]
            if r.store != "memory":
                argv += ["--store", r.store]
            if self.tls_cert and self.tls_key:
                argv += ["--tls-cert", self.tls_cert, "--tls-key", self.tls_key]
            self._corral_server("registry", argv, r.port, [])
            if r.token:  # through the environment: argv is visible in ps and in logs
                self.processes[-1] = self.processes[-1].model_copy(
                    update={"env": {"CORRAL_REGISTRY_TOKEN": r.token}, "token": r.token}
                )
        if self.run_router:
            rt = self.c.router
            argv = [*py, "router", "--host", self.host, "--port", str(rt.port), "--policy", rt.policy]
            # The router reads its table from a file the launcher writes: variables expanded,
            # launcher-only keys dropped, and secrets kept off the command line.
            router_toml = str(self.state_dir / "router.toml")
            argv += ["--config", router_toml]  # api_keys_env and allow_no_auth are in the file
            if self.registry_url:
                argv += ["--registry-url", self.registry_url]
            table = router_file_table(self.c, self.base, self.local_registry)
            # [corral] TLS serves the router too, and its CA verifies the registry (unless the
            # [router] table says otherwise).
            for key, value in (("tls_cert", self.tls_cert), ("tls_key", self.tls_key), ("ca", self.ca)):
                if value:
                    table.setdefault(key, value)
            self._corral_server("router", argv, rt.port, self._needs_registry())
            # The router wakes on-demand models on the control API with the control token.
            control = self.control_token()
            # SIGTERM drains the router (requests in flight get drain_timeout_s): stop_grace_s
            # must outlast it, or the SIGKILL that follows cuts the drain short.
            drain = float(table.get("drain_timeout_s", 30.0))
            self.processes[-1] = self.processes[-1].model_copy(
                update={
                    "files": {router_toml: _toml_table("router", table)},
                    "token": rt.admin_token,
                    "env": {"CORRAL_CONTROL_TOKEN": control} if control else {},
                    "stop_grace_s": drain + 5,
                }
            )

    def control_token(self) -> str | None:
        """The control API's token (dashboard, then corral table, then $CORRAL_TOKEN)."""
        return self.c.dashboard.token or self.c.corral.token or os.environ.get("CORRAL_TOKEN") or None

    def _needs_registry(self) -> list[Dependency]:
        # "started", not "healthy": the router's watch and the sitter's heartbeater both retry
        # from 0.1-0.2 s on, so their Python start-ups overlap the registry's (startup time).
        return [Dependency(name="registry", condition="started")] if self.local_registry else []

    def _corral_server(self, name: Kind, argv: list[str], port: int, deps: list[Dependency]) -> None:
        url = f"{self.scheme}://{self.host}:{port}"
        self.processes.append(
            ProcessPlan(
                name=name,
                kind=name,
                group="corral",
                entry=name,
                source=name,
                argv=argv,
                ports={"api": port},
                url=url,
                readiness=http_probe(f"{url}/health", ready=True),
                liveness=http_probe(f"{url}/health", ready=False),
                depends_on=deps,
                start_timeout_s=60,
                stop_grace_s=5,
            )
        )

    def entry(self, where: str, e: BackendConfig | ServiceConfig) -> None:
        files = self.replica_files(where, e)
        n = len(files)
        placed = self.allocate_gpus(where, e, n)
        gpus = placed.gpus
        names: list[str] = []
        for i, f in enumerate(files):
            named = n > 1 or isinstance(e, BackendConfig) or e.replicas_from is not None
            name = f"{e.name}-{i}" if named else e.name
            names.append(name)
            ctx = {"replica": str(i), "host": self.host, "gpus": ",".join(map(str, gpus[i]))}
            if e.port is not None:
                ctx["port"] = str(e.port + i * e.port_step)
            for pn, pv in e.ports.items():
                ctx[f"ports.{pn}"] = str(pv + i * e.port_step)
            if f is not None:
                ctx["file"] = f
            build = self.sitter if isinstance(e, BackendConfig) else self.service
            p = build(where, e, name, i, ctx, gpus[i])  # type: ignore[arg-type]
            if i in placed.errors:
                p = p.model_copy(update={"gpu_error": f"GPU placement refused: {placed.errors[i]}"})
            self.processes.append(p)
        self.replicas_of[e.name] = names

    def _fill_all(
        self, where: str, ctx: dict[str, str], e: BackendConfig | ServiceConfig
    ) -> tuple[dict[str, str], str | None]:
        env = {k: fill(v, ctx, file=self.file, field=f"{where}.env.{k}") for k, v in e.env.items()}
        cwd = fill(e.cwd, ctx, file=self.file, field=f"{where}.cwd") if e.cwd else None
        if cwd and not os.path.isabs(cwd):
            cwd = str(self.base / cwd)
        return env, cwd

    def _named_ports(self, ctx: dict[str, str]) -> dict[str, int]:
        return {k.removeprefix("ports."): int(v) for k, v in ctx.items() if k.startswith("ports.")}

    def sitter(
        self, where: str, b: BackendConfig, name: str, i: int, ctx: dict[str, str], gpus: list[int]
    ) -> ProcessPlan:
        port = int(ctx["port"])
        env, cwd = self._fill_all(where, ctx, b)
        f = lambda s, fld: fill(s, ctx, file=self.file, field=f"{where}.{fld}")  # noqa: E731
        args = [f(a, f"args[{j}]") for j, a in enumerate(b.args)]
        # An on-demand model is announced before it runs: its name must be known up front.
        models = b.models or ([b.model] if b.model and (b.preset == "mock" or b.start == "on_demand") else [])
        command: str | None = None
        if isinstance(b.command, list):
            cmd = [f(a, f"command[{j}]") for j, a in enumerate(b.command)]
            command = cmd[0]
            args = cmd[1:] + args
        elif b.command:
            command = f(b.command, "command")
        given: dict[str, object] = {
            "name": name,
            "host": self.host,
            "port": port,
            "service_type": b.preset,
            "state_dir": str(self.state_dir / "sitters" / name),
            "path": f(b.model, "model") if b.model else None,
            "models": models,
            "command": command,
            "args": args,
            "work_dir": cwd,
            "env": env,  # may hold secrets: the settings file is private, never argv
            "health_path": b.health_path,
            "max_concurrency": b.max_concurrency,
            "registry_url": self.registry_url,
            "registry_token": self.c.registry.token if self.registry_url else None,
            # With a registry the router learns of the backend from it; without, tell it directly.
            "router_url": None if self.registry_url else self.router_url,
            "max_restarts": b.max_restarts,
            "restart_delay": b.restart_delay,
            "heartbeat_interval": b.heartbeat_interval,
            "gpus": gpus,
            "gpu_release_timeout": b.gpu_release_timeout_s,
            "admin_token": b.admin_token,
            "service": b.name,  # the metrics labels: service "chat", replica 1 for chat-1
            "replica": i,
            "advertise_host": self.c.corral.advertise_host,
            "ca": self.ca,
            "tls_cert": self.tls_cert,
            "tls_key": self.tls_key,
            "generation_probe": b.generation_probe,
            "drain_timeout_s": b.drain_timeout_s,
            "park": parks_at_start(b.start, i, b.keep_warm) or None,
        }
        try:
            settings = SitterSettings.model_validate({k: v for k, v in given.items() if v is not None})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise self.err(
                str(err["msg"]).removeprefix("Value error, "), f"{where}.{err['loc'][0]}"
            ) from None
        if self.c.registry.url:
            # A worker host: refuse now, naming the config field, a backend that would register
            # a loopback URL with the registry on another host (the sitter would refuse anyway).
            try:
                check_advertised(settings)
            except ConfigError as exc:
                field = "corral.advertise_host" if self.c.corral.advertise_host else "corral.host"
                raise self.err(exc.message, field) from None
        # The file name carries a digest of the settings: the sitter's argv (its identity when a
        # launcher adopts it) changes exactly when its settings do.
        settings_file = str(self.state_dir / "sitters" / name / f"settings-{settings.digest()}.json")
        argv = [self.python, "-m", "corral", "sit", "--settings", settings_file]
        sitter_url = f"{self.scheme}://{self.host}:{port + 1}"
        return ProcessPlan(
            name=name,
            kind="sitter",
            group=b.group or b.name,
            entry=b.name,
            source=where,
            replica=i,
            argv=argv,
            env=gpu_env(gpus) if gpus else {},
            ports={"api": port, "sitter": port + 1, **self._named_ports(ctx)},
            url=f"http://{self.host}:{port}",
            # The sitter answers /health 200 only while its backend is healthy; a backend that
            # restarts must not get its sitter killed, so liveness only checks the sitter is up.
            # A parked sitter (on demand, beyond keep_warm) is ready once it answers: its engine
            # starts when the model is woken (launcher/ondemand.py).
            readiness=http_probe(
                f"{sitter_url}/info" if parks_at_start(b.start, i, b.keep_warm) else f"{sitter_url}/health",
                ready=True,
            ),
            liveness=Probe(tcp=f"{self.host}:{port + 1}", period_s=LIVE_PERIOD_S),
            depends_on=[*self._needs_registry(), *b.depends_on],
            gpus=gpus,
            models=models,
            token=b.admin_token,
            # An on-demand model's replicas beyond keep_warm start parked; the router wakes them.
            auto_start=b.auto_start,
            start=b.start,
            keep_warm=b.keep_warm,
            idle_unload_s=(b.idle_unload_s or 600.0) if b.start == "on_demand" else None,
            cold_start_timeout_s=b.cold_start_timeout_s,
            gpu_memory_gb=b.gpu_memory_gb,
            openai=True,
            stop_grace_s=max(b.stop_grace_s, 15),
            drain_timeout_s=b.drain_timeout_s,
            start_timeout_s=24 * 3600,  # big models load for long; the sitter owns the backend's timeouts
            files={settings_file: settings.file_text()},
            sitter=settings,
        )

    def service(
        self, where: str, s: ServiceConfig, name: str, i: int, ctx: dict[str, str], gpus: list[int]
    ) -> ProcessPlan:
        argv = [fill(a, ctx, file=self.file, field=f"{where}.command[{j}]") for j, a in enumerate(s.command)]
        env, cwd = self._fill_all(where, ctx, s)
        for k, v in (gpu_env(gpus) if gpus else {}).items():
            env.setdefault(k, v)
        ready = live = None
        if s.health is not None:
            ready, live = self._fill_health(where, s.health, ctx)
        ports = {"port": int(ctx["port"])} if "port" in ctx else {}
        ports.update(self._named_ports(ctx))
        return ProcessPlan(
            name=name,
            kind="service",
            group=s.group or s.name,
            entry=s.name,
            source=where,
            replica=i,
            argv=argv,
            env=env,
            cwd=cwd,
            ports=ports,
            url=f"http://{self.host}:{ctx['port']}" if "port" in ctx else None,
            readiness=ready,
            liveness=live,
            depends_on=list(s.depends_on),
            gpus=gpus,
            models=list(s.models),
            tags=list(s.tags),
            auto_start=s.auto_start,
            openai=s.openai,
            restart=s.restart,
            stop_grace_s=s.stop_grace_s,
            drain_timeout_s=s.drain_timeout_s,
            start_timeout_s=s.start_timeout_s,
            settle_s=s.settle_s,
        )

    def _fill_health(
        self, where: str, h: str | list[str] | Probe, ctx: dict[str, str]
    ) -> tuple[Probe, Probe]:
        """The readiness and liveness probes of ``health``, placeholders filled and validated
        again (a placeholder may fill in something that is no URL)."""
        field = f"{where}.health"
        try:
            if isinstance(h, str):
                text = fill(h, ctx, file=self.file, field=field)
                return probe_from(text, ready=True), probe_from(text, ready=False)
            if isinstance(h, list):
                argv = [fill(a, ctx, file=self.file, field=f"{field}[{j}]") for j, a in enumerate(h)]
                return probe_from(argv, ready=True), probe_from(argv, ready=False)
            data = h.model_dump(exclude_unset=True)
            for key in ("http", "tcp"):
                if data.get(key):
                    data[key] = fill(data[key], ctx, file=self.file, field=f"{field}.{key}")
            if data.get("exec"):
                data["exec"] = [fill(a, ctx, file=self.file, field=f"{field}.exec") for a in data["exec"]]
            probe = Probe(**data)
            return probe, probe
        except ValidationError as exc:
            err = exc.errors()[0]
            sub = f".{err['loc'][0]}" if err["loc"] else ""
            raise self.err(str(err["msg"]).removeprefix("Value error, "), field + sub) from None
        except ValueError as exc:
            raise self.err(str(exc), field) from None

    # -- whole plan -----------------------------------------------------------------------------
    def expand_dependencies(self) -> list[ProcessPlan]:
        out = []
        for p in self.processes:
            deps: list[Dependency] = []
            for d in p.depends_on:
                for target in self.replicas_of.get(d.name, [d.name]):
                    deps.append(Dependency(name=target, condition=d.condition))
            out.append(p.model_copy(update={"depends_on": deps}))
        return out

    def check_ports(self, processes: list[ProcessPlan]) -> None:
        owner: dict[int, str] = {self.c.dashboard.port: "the dashboard ([dashboard] port)"}
        for p in processes:
            for label, port in p.ports.items():
                what = f"{p.name} ({'sitter port+1' if label == 'sitter' else label})"
                if port in owner:
                    field = (
                        f"{p.source}.port"
                        if label in ("api", "sitter", "port")
                        else f"{p.source}.ports.{label}"
                    )
                    raise self.err(f"port {port} of {what} is already taken by {owner[port]}", field)
                owner[port] = what

    def build(self) -> Plan:
        entries = self.entries()
        self.check_dependencies(entries)
        self.builtin()
        for where, e in entries:
            self.entry(where, e)
        processes = self.expand_dependencies()
        self.check_ports(processes)
        order = start_order([(p.name, [d.name for d in p.depends_on]) for p in processes])
        by_name = {p.name: p for p in processes}
        token = self.control_token()
        return Plan(
            config_file=str(Path(self.file).resolve()),
            state_dir=self.state_dir,
            host=self.host,
            dashboard_port=self.c.dashboard.port,
            token=token,
            registry_url=self.registry_url,
            registry_token=self.c.registry.token,
            ca=self.ca,
            tls=self.tls_cert is not None,
            router_url=self.router_url,
            processes=[by_name[n] for n in order],
            gpu_free=self._gpu_free(),
        )

    def _gpu_free(self) -> dict[int, int | None]:
        """GPU index -> free bytes when measured (None for a GPU known only by its id)."""
        if self.gpu_planner is None:
            return {}
        return {g.index: g.memory_free if g.memory_total else None for g in self.gpu_planner.inventory.gpus}


def resolve_plan(
    config: Config,
    file: str,
    *,
    gpus: list[int] | None = None,
    python: str | None = None,
    place_gpus: bool = True,
) -> Plan:
    """The processes ``config`` (read from ``file``) asks for, in start order; raises ConfigError.

    ``gpus`` overrides the GPU inventory (tests); ``python`` the interpreter corral's own
    processes run with (default: this one); ``place_gpus=False`` gives every process no GPUs
    (for commands that only talk to a running launcher: a GPU gone must not stop ``corral down``).
    """
    return _Builder(config, file, gpus, python or sys.executable, place_gpus).build()
