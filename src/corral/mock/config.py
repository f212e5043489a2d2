"""The mock server's settings: one frozen object built by the CLI or by an embedding test."""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.errors import ConfigError


@dataclass(frozen=True)
class MockConfig:
    """Everything `corral mock` can be told. Times are milliseconds unless the name says ``_s``.

    ``crash_after`` / ``hang_after`` count inference requests (chat, completions, embeddings):
    the first N are served, request N+1 crashes the process (``os._exit``) or hangs it.
    ``hang_generation_after`` hangs inference requests only, while ``/health`` and ``/v1/models``
    keep answering 200 (vLLM's engine dead behind a live API server). ``stall_after_tokens``
    stops a stream after N tokens with the connection left open (a non-streamed answer longer
    than N tokens never comes). ``error_400_rate`` / ``error_429_rate`` answer that fraction of
    inference requests 400 / 429; ``slow_rate`` of them wait ``slow_ms`` more before the first token.
    ``first_ms``: the first inference request waits that much more (an engine's warm-up: CUDA
    graphs, compilation).
    """

    host: str = "127.0.0.1"
    port: int = 8100
    models: tuple[str, ...] = ("mock-model",)
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    max_tokens: int = 16
    startup_delay_s: float = 0.0
    fail_rate: float = 0.0
    crash_after: int | None = None
    hang_after: int | None = None
    hang_generation_after: int | None = None
    stall_after_tokens: int | None = None
    error_400_rate: float = 0.0
    error_429_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = 0.0
    first_ms: float = 0.0
    seed: int = 0
    workers: int = 1
    embedding_dim: int = 64
    cuda_mem_gb: float = 0.0
    # The engine-like behaviour (corral.mock.engine); all zero = off.
    prefix_cache_tokens: int = 0
    block_size: int = 16
    prefill_ms_per_token: float = 0.0
    max_num_seqs: int = 0
    drain_s: float = 10.0  # on SIGTERM, how long requests in flight may finish (0: cut them)
    reuse_port: bool = field(default=False, repr=False)  # set for each worker when workers > 1

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (
                bool(self.models) and all(m.strip() for m in self.models),
                "--models",
                "name at least one model",
            ),
            (0 <= self.port <= 65535, "--port", "must be 0..65535"),
            (self.ttft_ms >= 0, "--ttft-ms", "must be >= 0"),
            (self.itl_ms >= 0, "--itl-ms", "must be >= 0"),
            (self.drain_s >= 0, "--drain-s", "must be >= 0"),
            (self.max_tokens >= 1, "--max-tokens", "must be >= 1"),
            (self.startup_delay_s >= 0, "--startup-delay-s", "must be >= 0"),
            (0.0 <= self.fail_rate <= 1.0, "--fail-rate", "must be between 0 and 1"),
            (self.crash_after is None or self.crash_after >= 0, "--crash-after", "must be >= 0"),
            (self.hang_after is None or self.hang_after >= 0, "--hang-after", "must be >= 0"),
            (
                self.hang_generation_after is None or self.hang_generation_after >= 0,
                "--hang-generation-after",
                "must be >= 0",
            ),
            (
                self.stall_after_tokens is None or self.stall_after_tokens >= 0,
                "--stall-after-tokens",
                "must be >= 0",
            ),
            (0.0 <= self.error_400_rate <= 1.0, "--error-400-rate", "must be between 0 and 1"),
            (0.0 <= self.error_429_rate <= 1.0, "--error-429-rate", "must be between 0 and 1"),
            (
                self.fail_rate + self.error_400_rate + self.error_429_rate <= 1.0,
                "--error-400-rate",
                "--fail-rate + --error-400-rate + --error-429-rate must be <= 1",
            ),
            (0.0 <= self.slow_rate <= 1.0, "--slow-rate", "must be between 0 and 1"),
            (self.slow_ms >= 0, "--slow-ms", "must be >= 0"),
            (self.first_ms >= 0, "--first-ms", "must be >= 0"),
            (self.workers >= 1, "--workers", "must be >= 1"),
            (1 <= self.embedding_dim <= 65536, "--embedding-dim", "must be 1..65536"),
            (self.cuda_mem_gb >= 0, "--cuda-mem-gb", "must be >= 0"),
            (self.prefix_cache_tokens >= 0, "--prefix-cache-tokens", "must be >= 0"),
            (1 <= self.block_size <= 4096, "--block-size", "must be 1..4096"),
            (self.prefill_ms_per_token >= 0, "--prefill-ms-per-token", "must be >= 0"),
            (self.max_num_seqs >= 0, "--max-num-seqs", "must be >= 0 (0: no limit)"),
        ]
        for ok, flag, message in checks:
            if not ok:
                raise ConfigError(message, field=flag)


def parse_models(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``, keeping order and dropping duplicates."""
    names = [m.strip() for m in text.split(",")]
    return tuple(dict.fromkeys(m for m in names if m))
