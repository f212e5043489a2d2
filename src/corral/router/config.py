"""Router settings: the ``[router]`` table of a TOML file, overlaid with command-line flags."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from corral.config.cache_aware import CacheAwareSettings
from corral.errors import ConfigError
from corral.router.client_limits import ClientLimits
from corral.router.keys import KeySpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkerSpec(_Strict):
    """A statically configured worker; its models come from probing its ``/v1/models``."""

    url: str
    max_concurrency: int = Field(default=0, ge=0)  # 0 = unlimited

    @field_validator("url")
    @classmethod
    def _strip(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"worker URL {v!r} must start with http:// or https://")
        return v.rstrip("/")


class ModelTimeouts(_Strict):
    """Per-model overrides of the stall watchdog (``[router.timeouts.models."NAME"]``)."""

    first_token_s: float | None = Field(default=None, gt=0)
    inter_token_s: float | None = Field(default=None, gt=0)
    response_s: float | None = Field(default=None, gt=0)
    retry_on_timeout: bool | None = None


class Timeouts(_Strict):
    """Upstream timeouts in seconds: the stall watchdog.

    Streams: ``first_token_s`` until the first body byte, then ``inter_token_s`` between chunks,
    no total. Non-streamed requests: ``response_s`` for the whole answer. ``read`` / ``total`` are
    the older names, used when the new ones are not set. ``retry_on_timeout``: a request that
    timed out before any byte reached the client is tried on another instance (else 504).

    ``connect`` is LAN-sized: a live host's kernel answers a SYN within a millisecond even when
    its server is busy, and 1 s is also TCP's first SYN retransmission (RFC 6298), so a backend
    silent that long is down or cut off; the request goes to another instance instead of
    waiting. The same bound applies to request bytes a backend's host does not acknowledge
    (TCP_USER_TIMEOUT, with keep-alive probes on open connections), so a host cut off mid-request
    is noticed as fast. Raise it for backends across a WAN.
    """

    connect: float = Field(default=1.0, gt=0)
    read: float = Field(default=600.0, gt=0)  # older name: first byte and between stream chunks
    total: float = Field(default=1800.0, gt=0)  # older name: non-streaming requests
    first_token_s: float | None = Field(default=None, gt=0)
    inter_token_s: float | None = Field(default=None, gt=0)
    response_s: float | None = Field(default=None, gt=0)
    retry_on_timeout: bool = True
    models: dict[str, ModelTimeouts] = Field(default_factory=dict)

    def for_model(self, model: str) -> tuple[float, float, float, bool]:
        """(first_token_s, inter_token_s, response_s, retry_on_timeout) for ``model``."""
        o = self.models.get(model) or ModelTimeouts()
        first = o.first_token_s or self.first_token_s or self.read
        inter = o.inter_token_s or self.inter_token_s or self.read
        response = o.response_s or self.response_s or self.total
        retry = self.retry_on_timeout if o.retry_on_timeout is None else o.retry_on_timeout
        return first, inter, response, retry


class Outlier(_Strict):
    """Outlier ejection (as Envoy's): ``consecutive_stalls`` timeouts in a row take an instance
    out for ``base_ejection_s`` (doubling per ejection, at most ``max_ejection_s``); it comes
    back when a 1-token generation probe (``probe_timeout_s``) succeeds."""

    consecutive_stalls: int = Field(default=3, ge=1)
    base_ejection_s: float = Field(default=5.0, gt=0)
    max_ejection_s: float = Field(default=300.0, gt=0)
    probe_timeout_s: float = Field(default=5.0, gt=0)


class Breaker(_Strict):
    """Circuit breaker: open after ``failures`` consecutive failures, half-open after ``cooldown_s``."""

    failures: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=5.0, gt=0)


DEFAULT_KEYS_ENV = "CORRAL_API_KEYS"


class RouterSettings(_Strict):
    """Everything the router needs; built from the config file, then flags override."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    policy: str = "least_outstanding"
    registry_url: str | None = None  # several registries sharing one Redis: "a,b" (or a list)
    registry_timeout_s: float = Field(default=3.0, gt=0)  # connecting to / calling a registry
    # Router processes on one port (SO_REUSEPORT; `corral router --workers N`). Not `workers`:
    # that key is the list of static backends.
    processes: int = Field(default=1, ge=1, le=256)
    tls_cert: str | None = None  # serve HTTPS with this PEM certificate (and tls_key)
    tls_key: str | None = None
    ca: str | None = None  # PEM CA bundle the registry's (and https backends') certificates chain to
    workers: list[WorkerSpec] = Field(default_factory=list)
    max_concurrency: dict[str, int] = Field(default_factory=dict)  # per worker URL
    aliases: dict[str, str] = Field(default_factory=dict)
    # None: keys are not required (CORRAL_API_KEYS is still read); set: the router refuses to
    # start when that variable holds no key, unless allow_no_auth (see auth_problem).
    api_keys_env: str | None = None
    allow_no_auth: bool = False
    admin_token: str | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: int = Field(default=3, ge=0)  # extra attempts on other instances
    breaker: Breaker = Field(default_factory=Breaker)
    outlier: Outlier = Field(default_factory=Outlier)
    # Waiters per model, over all keys (also spelt queue_max); past it, 503 with Retry-After.
    queue_size: int = Field(default=1024, ge=0, validation_alias=AliasChoices("queue_size", "queue_max"))
    queue_timeout_s: float = Field(default=30.0, gt=0)
    keys: list[KeySpec] = Field(default_factory=list)  # [[router.keys]]: hashed keys, scopes, limits
    keys_file: str | None = None  # more keys (TOML [[keys]] or JSON), re-read when it changes
    keys_reload_s: float = Field(default=1.0, gt=0)  # how often the keys file's mtime is looked at
    limits_store: str | None = None  # redis://... : rpm/tpm buckets shared by every router on it
    usage_log: str | None = None  # JSON-lines file, one line per request with usage, for billing
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    limits: ClientLimits = Field(default_factory=ClientLimits)
    drain_timeout_s: float = Field(default=30.0, ge=0)  # SIGTERM: finish in-flight requests within
    probe_interval_s: float = Field(default=5.0, gt=0)  # healthy static workers
    probe_down_interval_s: float = Field(default=0.5, gt=0)  # workers out of rotation
    # Read the engines' queues from their /metrics this often (corral.router.engine_load);
    # None: every 1 s with the cache_aware policy, never otherwise; 0: never.
    engine_metrics_interval_s: float | None = Field(default=None, ge=0)
    cache_aware: CacheAwareSettings = Field(default_factory=CacheAwareSettings)  # the policy's constants

    def engine_metrics_every(self) -> float:
        """Seconds between engine-metrics scrapes (0: off)."""
        if self.engine_metrics_interval_s is None:
            return 1.0 if self.policy == "cache_aware" else 0.0
        return self.engine_metrics_interval_s

    @field_validator("registry_url", mode="before")
    @classmethod
    def _registry_urls(cls, v: Any) -> Any:
        from corral.settings.urls import url_list

        return url_list(v)

    @field_validator("workers", mode="before")
    @classmethod
    def _worker_strings(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"url": w} if isinstance(w, str) else w for w in v]
        return v

    @model_validator(mode="after")
    def _unique_keys(self) -> RouterSettings:
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError("two [[router.keys]] entries have the same name")
        if len({k.key_sha256 for k in self.keys}) != len(self.keys):
            raise ValueError("two [[router.keys]] entries have the same key_sha256")
        return self

    def concurrency_for(self, url: str) -> int:
        """The configured concurrency limit of a worker URL (0 = none)."""
        url = url.rstrip("/")
        for w in self.workers:
            if w.url == url and w.max_concurrency:
                return w.max_concurrency
        return self.max_concurrency.get(url, 0)


def load_settings(path: str | Path | None, overrides: dict[str, Any]) -> RouterSettings:
    """Read ``[router]`` from a TOML file (optional) and apply non-None ``overrides`` on top."""
    data: dict[str, Any] = {}
    file = str(path) if path else None
    if path:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", file=file) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", file=file) from None
        data = dict(doc.get("router", {}))
    for key, value in overrides.items():
        if value is None or value == []:
            continue
        if key == "workers":
            data["workers"] = [*data.get("workers", []), *value]
        elif "." in key:  # "limits.max_head_bytes": one field of a sub-table
            table, _, field = key.partition(".")
            sub = data.get(table)
            data[table] = {**(sub if isinstance(sub, dict) else {}), field: value}
        else:
            data[key] = value
    try:
        return RouterSettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "router." + ".".join(str(p) for p in err["loc"])
        raise ConfigError(err["msg"], file=file, field=field) from None


def parse_keys(value: str | None) -> frozenset[str]:
    """Comma-separated keys (blanks dropped); None or empty: none."""
    return frozenset(k.strip() for k in (value or "").split(",") if k.strip())


def keys_env(settings: RouterSettings) -> str:
    """The environment variable the client API keys are read from."""
    return settings.api_keys_env or DEFAULT_KEYS_ENV


def keys_required(settings: RouterSettings) -> str | None:
    """Where the config asks for client keys (a field path), or None when it does not.

    Only ``api_keys_env`` can come up empty at run time: ``[[router.keys]]`` are in the file,
    and a ``keys_file`` turns auth on even while it holds no key (every request refused).
    """
    return "router.api_keys_env" if settings.api_keys_env else None


def auth_on(settings: RouterSettings, n_keys: int) -> bool:
    """Whether clients need a key: ``n_keys`` (from every source) found, or a keys file."""
    return bool(n_keys) or settings.keys_file is not None


def auth_problem(settings: RouterSettings, n_keys: int) -> str | None:
    """Why the router must not start: keys are configured but none was found, so auth would
    be silently off; None when fine. ``n_keys`` counts the keys of every source (environment,
    ``[[router.keys]]``, keys file). ``allow_no_auth = true`` opts out."""
    asked = keys_required(settings)
    if asked is None or auth_on(settings, n_keys) or settings.allow_no_auth:
        return None
    return (
        f"{asked} = {settings.api_keys_env!r} asks for client API keys, but ${settings.api_keys_env}"
        " is unset or empty, so every request would be let in; export it (comma-separated keys),"
        " or set [router] allow_no_auth = true to run without keys"
    )


def auth_line(settings: RouterSettings, n_keys: int, n_env: int) -> str:
    """The start-up log line that says whether clients need a key, and how many there are
    (``n_env`` of the ``n_keys`` came from the environment variable)."""
    if auth_on(settings, n_keys):
        sources = [f"${keys_env(settings)}"] if n_env else []
        if settings.keys:
            sources.append("[[router.keys]]")
        if settings.keys_file:
            sources.append(f"keys_file {settings.keys_file}")
        return f"auth on: {n_keys} API key(s) from {', '.join(sources)}"
    why = "allow_no_auth = true" if settings.allow_no_auth else f"${keys_env(settings)} is not set"
    return f"auth OFF: any client may call the API ({why})"
