"""Per-request state shared by the proxy, the policies and the cancel endpoint."""

from __future__ import annotations

import asyncio
import json
from typing import Any

# How much of the conversation identifies it for prefix affinity: the first messages up to and
# including the first user turn (system prompt + opening question), or the prompt's first bytes.
_PROMPT_PREFIX = 256


class RequestContext:
    """What the router knows about one proxied request."""

    __slots__ = (
        "_key", "body", "cancelled", "hold", "key", "prefill", "rename", "request_id", "session_id", "task"
    )  # fmt: skip

    def __init__(
        self, request_id: str, body: dict[str, Any], session_id: str | None, task: asyncio.Task[Any] | None
    ) -> None:
        self.request_id = request_id
        self.body = body
        self.session_id = session_id
        self.task = task
        self.cancelled = False
        self.key: Any = None  # the API key (corral.router.keys.Key) when the router has keys
        # Asked for an alias: (target, alias) as JSON strings, so the answer names the alias.
        self.rename: tuple[bytes, bytes] | None = None
        self._key: bytes | None = None
        # cache_aware: a prefill in flight to wait for before sending, and this request's own
        # (corral.router.prefix_tree.Prefill), finished at its first byte.
        self.hold: Any = None
        self.prefill: Any = None

    def rid_bytes(self) -> bytes:
        """The request id as header bytes."""
        return self.request_id.encode("utf-8", "surrogateescape")

    def affinity_key(self) -> bytes | None:
        """Session header, ``user`` field, or the conversation's opening; None if none."""
        if self._key is None:
            self._key = _key(self.session_id, self.body)
        return self._key or None


def _key(session_id: str | None, body: dict[str, Any]) -> bytes:
    if session_id:
        return b"s:" + session_id.encode()
    user = body.get("user")
    if isinstance(user, str) and user:
        return b"u:" + user.encode()
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        opening = []
        for m in messages:
            opening.append(m)
            if isinstance(m, dict) and m.get("role") == "user":
                break
        return b"m:" + json.dumps(opening, sort_keys=True, separators=(",", ":")).encode()
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt:
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt:
        return b"p:" + prompt[:_PROMPT_PREFIX].encode()
    return b""


def rename_model(data: bytes, rename: tuple[bytes, bytes]) -> bytes:
    """``data`` (a JSON answer or SSE lines) with ``"model": target`` replaced by the alias the
    client asked for; a byte search, so the answer is never parsed (the hot path)."""
    target, alias = rename
    if target not in data:
        return data
    return data.replace(b'"model":' + target, b'"model":' + alias).replace(
        b'"model": ' + target, b'"model": ' + alias
    )
