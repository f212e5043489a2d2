"""Server-sent-event helpers for the stream relay: usage from the final events, error events.

The relay never parses events it only forwards; it looks for a non-null ``"usage"`` with a byte
search and reads the two token counts with a regex from there, so a stream costs one ``find`` per
chunk. Chunks are relayed on line boundaries, so a ``data:`` line is never split across chunks.
"""

from __future__ import annotations

import json
import re

_USAGE = b'"usage"'
# An event with no choices and a usage object, as vLLM, SGLang and llama.cpp write it (compact).
_USAGE_ONLY = b'"choices":[],"usage":{'
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


def usage_at(data: bytes, start: int = 0) -> tuple[int, int] | None:
    """(prompt, completion) tokens of the last non-null ``usage`` object in ``data``, if any."""
    i = data.rfind(_USAGE, start)
    while i >= 0:
        j = i + len(_USAGE)
        rest = data[j : j + 8].lstrip(b": \t")
        if rest.startswith(b"{"):
            p = _PROMPT.search(data, j)
            c = _COMPLETION.search(data, j)
            return (int(p.group(1)) if p else 0, int(c.group(1)) if c else 0)
        i = data.rfind(_USAGE, start, i)
    return None


def strip_usage_event(chunk: bytes) -> bytes:
    """Drop ``data:`` events whose ``choices`` is empty and that carry a usage object.

    Used when the router itself asked for ``stream_options.include_usage``: the client did not,
    so it must not see the extra final chunk.
    """
    out: list[bytes | None] = []
    for line in chunk.split(b"\n"):
        if line.startswith(b"data:") and line.find(_USAGE) >= 0:
            if line.find(_USAGE_ONLY) >= 0:  # the shape engines send, compact: no JSON parse
                out.append(None)
                continue
            try:
                event = json.loads(line[5:])
            except ValueError:
                event = None
            if isinstance(event, dict) and event.get("usage") and not event.get("choices"):
                out.append(None)
                continue
        out.append(line)
    # Removing an event leaves its blank separator line behind: drop one blank after each gap.
    kept: list[bytes] = []
    skip_blank = False
    for item in out:
        if item is None:
            skip_blank = True
            continue
        if skip_blank and item in (b"", b"\r"):
            skip_blank = False
            continue
        skip_blank = False
        kept.append(item)
    return b"\n".join(kept)


def error_event(message: str, status: int = 502, code: str = "upstream_error") -> bytes:
    """An SSE event carrying an OpenAI-style error, for streams that can no longer send a status."""
    from corral.errors import error_body

    return b"data: " + json.dumps(error_body(message, status, code)).encode() + b"\n\n"
