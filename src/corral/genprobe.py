"""The generation probe: does an OpenAI-compatible backend still generate a token?

``/health`` and ``/v1/models`` are served by an engine's API server, which can outlive the engine
itself (vLLM: the engine core dies, the API server keeps answering 200). One 1-token completion
is the cheapest question that only a working engine answers. Used by the router to re-admit an
instance ejected for stalls and to time a new instance (``cache_aware``'s speed probe), and by
the sitter's scheduled generation probe.
"""

from __future__ import annotations

import aiohttp


async def generates(
    session: aiohttp.ClientSession | None, base_url: str, model: str, prompt: str = "Hi"
) -> bool:
    """Whether the backend at ``base_url`` generates one token of ``model`` within the session's
    timeout: ``/v1/completions``, then ``/v1/chat/completions`` when that path is refused (4xx).

    A 429 counts as alive: the engine is full, which only a working engine is.
    """
    if session is None:
        return False
    base = {"model": model, "max_tokens": 1, "temperature": 0}
    try:
        for path, body in (
            ("/v1/completions", {**base, "prompt": prompt}),
            ("/v1/chat/completions", {**base, "messages": [{"role": "user", "content": prompt}]}),
        ):
            async with session.post(base_url + path, json=body) as r:
                await r.read()
                if r.status in (200, 429):
                    return True
                if not 400 <= r.status < 500:
                    return False
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
    return False
