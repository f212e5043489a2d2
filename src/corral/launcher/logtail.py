"""Reading log files: the last N lines, and following new lines (truncation-aware)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

_POLL_S = 0.2
_BLOCK = 64 * 1024


def read_tail(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of ``path`` ([] if it does not exist), read from the end."""
    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            data = b""
            pos = end
            while pos > 0 and data.count(b"\n") <= n:
                step = min(_BLOCK, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:]


def read_tail_matching(path: Path, n: int, keep: Callable[[str], bool]) -> list[str]:
    """The last ``n`` lines of ``path`` that ``keep`` accepts (reads further back as needed)."""
    want = max(n, 1) * 4
    while True:
        lines = read_tail(path, want)
        kept = [ln for ln in lines if keep(ln)]
        if len(kept) >= n or len(lines) < want:
            return kept[-n:] if n > 0 else []
        want *= 4


async def follow_lines(path: Path, tail: int, keepalive_s: float = 15.0) -> AsyncIterator[str | None]:
    """The last ``tail`` lines, then each new line as it is written; None as a keep-alive tick.

    Polls the file (the writer is another process); a truncated file (rotation) is read from 0.
    """
    for line in read_tail(path, tail):
        yield line
    try:
        offset = os.stat(path).st_size
    except FileNotFoundError:
        offset = 0
    partial = b""
    quiet_since = time.monotonic()
    while True:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = 0
        if size < offset:
            offset, partial = 0, b""
        if size > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read(size - offset)
            offset += len(chunk)
            *done, partial = (partial + chunk).split(b"\n")
            for raw in done:
                yield raw.decode("utf-8", "replace")
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= keepalive_s:
            quiet_since = time.monotonic()
            yield None
        await asyncio.sleep(_POLL_S)
