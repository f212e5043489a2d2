"""``corral mock``: the OpenAI-compatible mock backend's command line."""

from __future__ import annotations

import sys

import typer


def register(app: typer.Typer) -> None:
    """Add the ``mock`` command to the ``corral`` CLI."""

    @app.command("mock")
    def mock(
        host: str = typer.Option("127.0.0.1", help="Address to listen on."),
        port: int = typer.Option(8100, help="Port to listen on (0: any free port, one worker only)."),
        models: str = typer.Option("mock-model", help="Comma-separated model names served."),
        ttft_ms: float = typer.Option(0.0, help="Time to first token, ms."),
        itl_ms: float = typer.Option(0.0, help="Inter-token latency, ms."),
        max_tokens: int = typer.Option(16, help="Token limit when a request sets no max_tokens."),
        startup_delay_s: float = typer.Option(0.0, help="Seconds /health answers 503 'loading'."),
        fail_rate: float = typer.Option(0.0, help="Fraction of inference requests answered 500/503."),
        crash_after: int | None = typer.Option(None, help="Exit hard when inference request N+1 arrives."),
        hang_after: int | None = typer.Option(None, help="Never answer again after N inference requests."),
        hang_generation_after: int | None = typer.Option(
            None, help="Inference requests after the N-th hang; /health and /v1/models stay 200."
        ),
        stall_after_tokens: int | None = typer.Option(
            None, help="Streams stop after N tokens, connection left open (longer non-streamed answers hang)."
        ),
        error_400_rate: float = typer.Option(0.0, help="Fraction of inference requests answered 400."),
        error_429_rate: float = typer.Option(0.0, help="Fraction of inference requests answered 429 (full)."),
        slow_rate: float = typer.Option(0.0, help="Fraction of inference requests slowed by --slow-ms."),
        slow_ms: float = typer.Option(0.0, help="Extra wait before the first token of a slowed request, ms."),
        first_ms: float = typer.Option(
            0.0, help="Extra wait of the first inference request (a warm-up), ms."
        ),
        seed: int = typer.Option(0, help="Seed of the generated text, embeddings and fault draws."),
        workers: int = typer.Option(1, help="Serving processes sharing the port (SO_REUSEPORT)."),
        embedding_dim: int = typer.Option(64, help="Dimension of the embeddings."),
        cuda_mem_gb: float = typer.Option(0.0, help="GiB of GPU memory each worker holds (needs torch)."),
        prefix_cache_tokens: int = typer.Option(0, help="Engine-like prefix cache of N tokens (LRU blocks)."),
        block_size: int = typer.Option(16, help="Tokens per prefix-cache block."),
        prefill_ms_per_token: float = typer.Option(0.0, help="Prefill time per uncached prompt token, ms."),
        max_num_seqs: int = typer.Option(
            0, help="Requests running at once; more wait in a queue (0: no limit)."
        ),
        drain_s: float = typer.Option(
            10.0, help="On SIGTERM, seconds requests in flight may take (0: cut them, as some engines do)."
        ),
    ) -> None:
        """Serve a fake OpenAI-compatible API: for tests, demos and benchmarks without a GPU."""
        from corral.mock.config import MockConfig, parse_models

        config = MockConfig(
            host=host,
            port=port,
            models=parse_models(models),
            ttft_ms=ttft_ms,
            itl_ms=itl_ms,
            max_tokens=max_tokens,
            startup_delay_s=startup_delay_s,
            fail_rate=fail_rate,
            crash_after=crash_after,
            hang_after=hang_after,
            hang_generation_after=hang_generation_after,
            stall_after_tokens=stall_after_tokens,
            error_400_rate=error_400_rate,
            error_429_rate=error_429_rate,
            slow_rate=slow_rate,
            slow_ms=slow_ms,
            first_ms=first_ms,
            seed=seed,
            workers=workers,
            embedding_dim=embedding_dim,
            cuda_mem_gb=cuda_mem_gb,
            prefix_cache_tokens=prefix_cache_tokens,
            block_size=block_size,
            prefill_ms_per_token=prefill_ms_per_token,
            max_num_seqs=max_num_seqs,
            drain_s=drain_s,
        )
        if config.workers == 1:
            from corral.mock.server import run_one

            run_one(config)
        else:
            from corral.mock.workers import run_workers

            sys.exit(run_workers(config))
