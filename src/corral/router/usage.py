"""Token usage per API key and model: counters, tokens per minute, and a JSON-lines log.

Counts come from the answer's ``usage`` object (the final SSE events for a stream), read once
per request by the proxy; nothing here parses chunks.

The optional log (``usage_log``) gets one line per request that had usage, appended with a single
``write`` on an ``O_APPEND`` descriptor, so lines from several routers on one file do not
interleave. Each line carries the request id and a per-process ``router`` id, so a billing job
can de-duplicate. When the router starts, it replays the log into its totals (``GET
/admin/usage`` then goes on from where it was) and never writes those lines again: a restart
counts nothing twice. A line cut short by a crash is truncated away before appending.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

log = logging.getLogger("corral.router")

_time = time.time


class Usage:
    """Totals per key name and model: requests, prompt tokens, completion tokens.

    Kept as key -> model -> [requests, prompt, completion] (string keys hash once and cache it;
    a (key, model) tuple would be built and hashed per request), and per key a two-minute
    window ``[minute, tokens this minute, tokens last minute]`` for tokens/minute.
    """

    def __init__(self, log_path: str | None = None, router_id: str = "") -> None:
        self.by_key: dict[str, dict[str, list[int]]] = {}
        self.windows: dict[str, list[int]] = {}
        self.since = time.time()
        self.log_path = log_path
        self.router_id = router_id
        self.replayed = 0
        self._fd: int | None = None
        if log_path:
            self._open(log_path)

    def record(self, request_id: str, key: str, model: str, prompt: int, completion: int) -> None:
        """Count one answered request's usage (and log it when a log is configured)."""
        per = self.by_key.get(key)
        if per is None:
            per = self.by_key[key] = {}
        t = per.get(model)
        if t is None:
            t = per[model] = [0, 0, 0]
        t[0] += 1
        t[1] += prompt
        t[2] += completion
        now = _time()
        minute = int(now) // 60
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = [minute, 0, 0]
        if w[0] != minute:
            w[2] = w[1] if w[0] == minute - 1 else 0
            w[0], w[1] = minute, 0
        w[1] += prompt + completion
        if self._fd is not None:
            self._log(now, request_id, key, model, prompt, completion)

    def _log(self, now: float, request_id: str, key: str, model: str, prompt: int, completion: int) -> None:
        line = {
            "ts": round(now, 3),
            "id": request_id,
            "router": self.router_id,
            "key": key,
            "model": model,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
        }
        try:
            os.write(self._fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())  # type: ignore[arg-type]
        except OSError as exc:  # a full disk must not fail the request that was already answered
            log.warning("usage log %s: write failed: %s", self.log_path, exc.strerror)

    @property
    def totals(self) -> dict[tuple[str, str], list[int]]:
        """(key, model) -> [requests, prompt tokens, completion tokens]."""
        return {(k, m): t for k, per in list(self.by_key.items()) for m, t in list(per.items())}

    def tokens_per_minute(self, key: str) -> int:
        """Prompt + completion tokens of ``key`` over the last 60 s (sliding-window estimate:
        this minute's count plus last minute's, weighted by how much of it is still in the window)."""
        w = self.windows.get(key)
        if w is None:
            return 0
        now = time.time()
        minute = int(now) // 60
        if w[0] == minute:
            return int(w[1] + w[2] * (1 - (now % 60) / 60))
        if w[0] == minute - 1:
            return int(w[1] * (1 - (now % 60) / 60))
        return 0

    def report(self, key: str | None = None) -> dict[str, Any]:
        """The ``GET /admin/usage`` document (optionally one key's rows only)."""
        rows = [
            {
                "key": k,
                "model": m,
                "requests": t[0],
                "prompt_tokens": t[1],
                "completion_tokens": t[2],
                "total_tokens": t[1] + t[2],
            }
            for (k, m), t in sorted(self.totals.items())
            if key is None or k == key
        ]
        return {"object": "usage", "since": self.since, "log": self.log_path, "data": rows}

    def close(self) -> None:
        """Close the log."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- the log ------------------------------------------------------------------------------
    def _open(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._replay(fd)
        finally:
            os.close(fd)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _replay(self, fd: int) -> None:
        """Add every complete line of the log to the totals; cut off a torn last line."""
        size = os.fstat(fd).st_size
        good = 0  # bytes up to the end of the last complete line
        first_ts: float | None = None
        with os.fdopen(os.dup(fd), "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                good += len(raw)
                try:
                    rec = json.loads(raw)
                    key, model = str(rec["key"]), str(rec["model"])
                    p, c = int(rec["prompt_tokens"]), int(rec["completion_tokens"])
                except (ValueError, KeyError, TypeError):
                    continue  # a foreign or damaged line: skipped, not fatal
                t = self.by_key.setdefault(key, {}).setdefault(model, [0, 0, 0])
                t[0] += 1
                t[1] += p
                t[2] += c
                self.replayed += 1
                if first_ts is None and isinstance(rec.get("ts"), int | float):
                    first_ts = float(rec["ts"])
        if good < size:
            log.warning("usage log %s: dropping a torn last line (%d bytes)", self.log_path, size - good)
            os.ftruncate(fd, good)
        if first_ts is not None:
            self.since = min(self.since, first_ts)
