"""The `corral.toml` schema: pydantic models that reject unknown fields so typos are caught."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from corral.settings.generation_probe import GenerationProbe
from corral.settings.probe import Probe
from corral.settings.restart import RestartPolicy

Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
Preset = Literal["mock", "vllm", "sglang", "llama.cpp", "command", "InfiniLM", "InfiniLM-Rust"]
Policy = Literal["round_robin", "least_outstanding", "power_of_two", "prefix_affinity", "cache_aware"]

# Names the launcher gives its own processes; entries may not take them.
RESERVED_NAMES = frozenset({"registry", "router", "dashboard", "launcher", "all"})


class Strict(BaseModel):
    """Base of every config table: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# The probe and restart policy are the shared models (corral.settings): config, launcher, sitter
# and corral.proc validate them the same way. The old names stay for callers.
ProbeConfig = Probe
RestartConfig = RestartPolicy


class Dependency(Strict):
    """``depends_on`` entry: start after ``name`` reached ``condition``."""

    name: str
    condition: Literal["started", "healthy"] = "healthy"


def _deps(value: object) -> object:
    """Accept ``"db"`` as shorthand for ``{name = "db"}``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


class CorralSection(Strict):
    """``[corral]``: where state lives and what the servers bind to."""

    state_dir: str = ".corral"
    host: str = "127.0.0.1"
    gpus: int | list[int] | None = None  # count or ids; None = ask nvidia-smi
    token: str | None = None
    # The address routers on other hosts dial for this host's backends (sitters' --advertise-host;
    # default: derived from `host`, docs/multihost.md).
    advertise_host: str | None = None
    ca: str | None = None  # PEM CA bundle an https registry's certificate chains to (sitters, launcher)
    # HTTPS on the servers `corral up` starts here (registry, router, sitters' port+1 API); the
    # launcher's own calls to them trust `ca` (docs/multihost.md#tls).
    tls_cert: str | None = None
    tls_key: str | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> CorralSection:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self


class RegistrySection(Strict):
    """``[registry]``. With ``url`` (a registry on another host, or several sharing one Redis as
    ``a,b`` or a list) this host is a worker host: no local registry, and no local router unless
    ``[router] enabled = true`` says so; its sitters register there."""

    enabled: bool = True
    port: Port = 18000
    store: str = "memory"
    token: str | None = None
    url: str | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _urls(cls, v: object) -> object:
        from corral.settings.urls import url_list

        return url_list(v)

    @model_validator(mode="after")
    def _remote_or_local(self) -> RegistrySection:
        if self.url and self.enabled and "enabled" in self.model_fields_set:
            raise ValueError("url (a registry elsewhere) and enabled = true (one here) exclude each other")
        return self

    @property
    def local(self) -> bool:
        """Whether this host runs the registry."""
        return self.enabled and not self.url


class RouterSection(Strict):
    """``[router]``: the launcher reads the fields below; every other key is the router's own
    (``corral.router.config.RouterSettings``: workers, timeouts, retries, breaker, ...) and is
    validated against the router's schema when the file loads."""

    model_config = ConfigDict(extra="allow", frozen=True)

    enabled: bool = True
    port: Port = 8000
    policy: Policy = "least_outstanding"
    # Set: client keys are required (the router refuses to start without them, unless
    # allow_no_auth); unset: CORRAL_API_KEYS is used when present, else no auth.
    api_keys_env: str | None = None
    allow_no_auth: bool = False
    admin_token: str | None = None
    aliases: dict[str, str] = {}


class DashboardSection(Strict):
    """``[dashboard]``: the launcher's control API and UI."""

    port: Port = 8080
    token: str | None = None


class _Entry(Strict):
    """Fields shared by ``[[backend]]`` and ``[[service]]``."""

    name: Name
    env: dict[str, str] = {}
    cwd: str | None = None
    depends_on: list[Dependency] = []
    group: str | None = None
    enabled: bool = True
    auto_start: bool = True
    replicas: int = Field(default=1, ge=1, le=256)
    replicas_from: str | None = None
    port: Port | None = None
    ports: dict[str, Port] = {}
    port_step: int = Field(default=10, ge=1)
    gpus_per_replica: int = Field(default=0, ge=0)
    gpus: list[list[int]] | None = None  # explicit ids per replica
    share_gpus: bool = False  # replicas may share a GPU (placement spreads them)
    gpu_memory_gb: float | None = Field(default=None, gt=0)  # GiB needed free on each GPU of a replica
    models: list[str] = []
    stop_grace_s: float = Field(default=10, ge=0)
    # Rolling restarts and reloads: how long a draining replica's in-flight requests may take.
    drain_timeout_s: float = Field(default=30, ge=0)

    _norm_deps = field_validator("depends_on", mode="before")(_deps)

    @model_validator(mode="after")
    def _replica_sources(self) -> _Entry:
        if self.replicas_from is not None and "replicas" in self.model_fields_set:
            raise ValueError("set either replicas or replicas_from, not both")
        if self.gpus is not None and self.gpus_per_replica:
            raise ValueError("set either gpus or gpus_per_replica, not both")
        return self


class BackendConfig(_Entry):
    """``[[backend]]``: one inference server per replica, each run by a sitter."""

    preset: Preset = "command"
    model: str | None = None
    port: Port  # type: ignore[assignment]  # required for backends
    args: list[str] = []
    command: list[str] | str | None = None
    health_path: str | None = None
    max_concurrency: int | None = Field(default=None, ge=1)
    max_restarts: int | None = Field(default=None, ge=0)
    restart_delay: float | None = Field(default=None, ge=0)
    heartbeat_interval: float | None = Field(default=None, gt=0)
    admin_token: str | None = None
    gpu_release_timeout_s: float | None = Field(default=None, gt=0)  # the sitter's --gpu-release-timeout
    # Models on demand (docs/ondemand.md): started by the first request, unloaded when idle.
    start: Literal["always", "on_demand"] = "always"
    idle_unload_s: float | None = Field(default=None, gt=0)  # on_demand: default 600; always: never
    keep_warm: int = Field(default=0, ge=0)  # replicas kept up even when idle
    cold_start_timeout_s: float = Field(default=600, gt=0)  # how long a first request may wait
    generation_probe: GenerationProbe | None = None  # default: the preset's (vllm: on)

    @model_validator(mode="after")
    def _needs_something_to_run(self) -> BackendConfig:
        if self.keep_warm > self.replicas:
            raise ValueError(f"keep_warm ({self.keep_warm}) is more than replicas ({self.replicas})")
        if self.start == "always" and ("keep_warm" in self.model_fields_set or self.idle_unload_s):
            raise ValueError('keep_warm and idle_unload_s need start = "on_demand"')
        if self.preset == "command" and not self.command:
            raise ValueError('preset "command" needs command = [...]')
        if self.preset in ("vllm", "sglang", "llama.cpp") and not self.model:
            raise ValueError(f'preset "{self.preset}" needs model = "..."')
        if self.preset == "mock" and not self.models and not self.model:
            raise ValueError('preset "mock" needs models = [...] (or model)')
        return self


class ServiceConfig(_Entry):
    """``[[service]]``: any other process, supervised the same way."""

    command: list[str] = Field(min_length=1)
    health: str | list[str] | Probe | None = None
    tags: list[str] = []
    openai: bool = False
    restart: RestartPolicy = RestartPolicy()
    start_timeout_s: float = Field(default=600, gt=0)
    settle_s: float = Field(default=1.0, ge=0)  # without health: healthy once up this long

    @field_validator("command", mode="before")
    @classmethod
    def _argv_only(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError('must be a list of argv words (no shell), e.g. ["python", "-m", "app"]')
        return value

    @field_validator("health")
    @classmethod
    def _health_form(cls, value: object) -> object:
        # The shorthand is checked as the probe it becomes, so `http:///health` fails here,
        # naming the field, and never later in the launcher.
        if isinstance(value, str | list):
            Probe.shorthand(value)
        return value


class Config(Strict):
    """A whole ``corral.toml``."""

    corral: CorralSection = CorralSection()
    registry: RegistrySection = RegistrySection()
    router: RouterSection = RouterSection()
    dashboard: DashboardSection = DashboardSection()
    backend: list[BackendConfig] = []
    service: list[ServiceConfig] = []
