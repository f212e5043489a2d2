"""Request counters, readable as JSON (``/stats``) and Prometheus text (``/metrics``).

Plain ints on one event loop: no locks, no histograms, nothing that costs on the hot path.
Invariant: ``total == in_flight + completed + aborted + failed``.
"""

from __future__ import annotations

from typing import Any

_FIELDS = ("total", "in_flight", "completed", "aborted", "failed")


class ModelCounters:
    """The counters of one model (and, summed, of the whole process)."""

    __slots__ = _FIELDS

    def __init__(self) -> None:
        self.total = self.in_flight = self.completed = self.aborted = self.failed = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready dict."""
        return {f: getattr(self, f) for f in _FIELDS}


class Stats:
    """Counters for inference requests; handlers call ``begin`` then exactly one ending."""

    def __init__(self, models: tuple[str, ...]) -> None:
        self.all = ModelCounters()
        self.by_model = {m: ModelCounters() for m in models}

    def begin(self, model: ModelCounters | None) -> None:
        """A request arrived (``model`` is None until a known model is named)."""
        self.all.total += 1
        self.all.in_flight += 1
        if model is not None:
            model.total += 1
            model.in_flight += 1

    def end(self, model: ModelCounters | None, outcome: str) -> None:
        """A request ended: ``outcome`` is "completed", "aborted" or "failed"."""
        self.all.in_flight -= 1
        setattr(self.all, outcome, getattr(self.all, outcome) + 1)
        if model is not None:
            model.in_flight -= 1
            setattr(model, outcome, getattr(model, outcome) + 1)

    def as_dict(self) -> dict[str, Any]:
        """The ``/stats`` document."""
        doc: dict[str, Any] = self.all.as_dict()
        doc["by_model"] = {m: c.as_dict() for m, c in self.by_model.items()}
        return doc

    def prometheus(self, vllm_running: bool = True) -> str:
        """The ``/metrics`` text (Prometheus exposition format 0.0.4).

        ``vllm_running=False`` leaves out ``vllm:num_requests_running`` (the engine reports it).
        """
        lines: list[str] = []
        for f in _FIELDS:
            kind = "gauge" if f == "in_flight" else "counter"
            name = f"corral_mock_requests_{f}" + ("_total" if kind == "counter" and f != "total" else "")
            lines.append(f"# HELP {name} Inference requests: {f.replace('_', ' ')}.")
            lines.append(f"# TYPE {name} {kind}")
            lines.append(f"{name} {getattr(self.all, f)}")
            for model, c in self.by_model.items():
                lines.append(f'{name}{{model="{_label(model)}"}} {getattr(c, f)}')
        if not vllm_running:
            return "\n".join(lines) + "\n"
        # vLLM's gauge, so that load-aware routers can read the mock as they read vLLM.
        lines.append("# HELP vllm:num_requests_running Requests being generated.")
        lines.append("# TYPE vllm:num_requests_running gauge")
        for model, c in self.by_model.items():
            lines.append(f'vllm:num_requests_running{{model_name="{_label(model)}"}} {c.in_flight}')
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
