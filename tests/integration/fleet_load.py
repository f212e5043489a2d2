"""Client load for fleet-change tests and bench/fleet_changes.py: N clients (half streaming)
through the router with the openai SDK, counting failures and truncated streams."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import openai


@dataclass
class LoadResult:
    """Totals of a load run."""

    ok: int = 0
    failed: int = 0
    truncated: int = 0
    errors: list[str] = field(default_factory=list)


class Load:
    """``clients`` threads sending chat completions to ``base_url`` until ``stop()``."""

    def __init__(self, base_url: str, model: str, clients: int, max_tokens: int = 16) -> None:
        self.base_url, self.model, self.max_tokens = base_url, model, max_tokens
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i % 2 == 1,), daemon=True) for i in range(clients)
        ]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        return self.result

    def _count(self, what: str, error: str | None = None) -> None:
        with self._lock:
            setattr(self.result, what, getattr(self.result, what) + 1)
            if error and len(self.result.errors) < 20:
                self.result.errors.append(f"[{time.monotonic():.2f}] {error}")  # when, to place it

    def _run(self, stream: bool) -> None:
        client = openai.OpenAI(base_url=self.base_url, api_key="none", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "hello"}]
        while not self._stop.is_set():
            try:
                if stream:
                    finish = None
                    chunks = client.chat.completions.create(
                        model=self.model,
                        messages=messages,
                        stream=True,
                        max_tokens=self.max_tokens,  # type: ignore[arg-type]
                    )
                    for chunk in chunks:
                        if chunk.choices and chunk.choices[0].finish_reason:
                            finish = chunk.choices[0].finish_reason
                    self._count(
                        "ok" if finish else "truncated", None if finish else "stream without finish_reason"
                    )
                else:
                    r = client.chat.completions.create(
                        model=self.model,
                        messages=messages,
                        max_tokens=self.max_tokens,  # type: ignore[arg-type]
                    )
                    self._count("ok" if r.choices else "failed", None if r.choices else "no choices")
            except Exception as exc:  # every failure is counted, whatever its kind
                self._count("failed", f"{type(exc).__name__}: {exc}"[:200])
                time.sleep(0.01)
