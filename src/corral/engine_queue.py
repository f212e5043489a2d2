"""An engine's queue (requests running + waiting) from its Prometheus ``/metrics`` text.

Understood: vLLM (``vllm:num_requests_running`` + ``vllm:num_requests_waiting``), SGLang
(``sglang:num_running_reqs`` + ``sglang:num_queue_reqs``), llama.cpp's server
(``llamacpp:requests_processing`` + ``llamacpp:requests_deferred``). Read by the router (engine
load for routing, ``corral.router.engine_load``) and by the sitter (drain before stopping,
``corral.sitter.drain``).
"""

from __future__ import annotations

QUEUE_METRICS = frozenset(
    (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
    )
)


def queue_length(text: str) -> float | None:
    """Running + waiting requests in a Prometheus text page (summed over labels); None: no such metric."""
    total: float | None = None
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        if name_end < 0 or line[:name_end] not in QUEUE_METRICS:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        total = (total or 0.0) + value
    return total
