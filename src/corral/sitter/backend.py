"""Turn a SitterConfig into the ProcessSpec the supervisor runs, and name the backend's URLs."""

from __future__ import annotations

import re
from pathlib import Path

from corral.proc.spec import Probe, ProcessSpec, RestartPolicy
from corral.settings.addresses import WILDCARDS
from corral.sitter.config import SitterConfig
from corral.sitter.identity import default_state_dir

# The legacy --max-restarts counted every restart since start (no window), and a long run never
# reset the count: "stable" after a year keeps that.
_NEVER_STABLE_S = 365 * 24 * 3600.0


def probe_host(host: str) -> str:
    """Where the sitter itself reaches the backend: loopback when bound to every address."""
    if host in WILDCARDS:
        return "::1" if host == "::" else "127.0.0.1"
    return host


def url(host: str, port: int, scheme: str = "http") -> str:
    """``http://host:port`` with IPv6 literals bracketed."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def instance_id(name: str, host: str, port: int) -> str:
    """A registry id that stays the same across sitter restarts (so re-registering replaces)."""
    safe = re.sub(r"[^A-Za-z0-9._:@-]", "-", f"{name}@{host}:{port}").lstrip("._:@-")
    return (safe or "backend")[:128]


def health_path(cfg: SitterConfig) -> str:
    """``--health-path``, else the preset's readiness path."""
    return cfg.health_path or cfg.preset.health_path(cfg.launch_request())


def backend_env(cfg: SitterConfig) -> dict[str, str]:
    """``--env``, plus ``CUDA_VISIBLE_DEVICES`` (and NVML's device order) for ``--gpus``."""
    env = dict(cfg.env)
    if cfg.gpus:
        # CUDA orders devices fastest-first unless told PCI order, which is NVML's (docs/gpu.md).
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        env["CUDA_VISIBLE_DEVICES"] = cfg.cuda_visible_devices or ""
    return env


def process_spec(cfg: SitterConfig) -> ProcessSpec:
    """The supervised backend: argv from the preset, probes on its health path, legacy restarts."""
    preset = cfg.preset
    req = cfg.launch_request()
    state_dir = Path(cfg.state_dir) if cfg.state_dir else default_state_dir(cfg.service_name, cfg.port)
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "-", cfg.service_name)
    health_url = url(probe_host(cfg.host), cfg.port) + health_path(cfg)
    return ProcessSpec(
        name=cfg.service_name,
        argv=preset.argv(req),
        env=backend_env(cfg),
        cwd=cfg.work_dir,
        log_file=state_dir / f"{safe_name}.log",
        pid_file=state_dir / f"{safe_name}.pid",
        ports=[cfg.port],
        # While starting, the supervisor polls readiness every 0.1 s; once up, every 2 s.
        readiness=Probe(http=health_url, period_s=2, timeout_s=5, failure_threshold=3),
        liveness=Probe(http=health_url, period_s=10, timeout_s=10, failure_threshold=3),
        start_timeout_s=cfg.start_timeout or preset.default_start_timeout_s,
        restart=RestartPolicy(
            policy="always",
            max_restarts=cfg.max_restarts,
            window_s=None,
            backoff_initial_s=cfg.restart_delay,
            backoff_factor=1,
            backoff_max_s=cfg.restart_delay,
            stable_after_s=_NEVER_STABLE_S,
            max_failed_starts=cfg.max_failed_starts,
        ),
        stop_grace_s=10,
    )
