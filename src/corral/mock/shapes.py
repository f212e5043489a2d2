"""OpenAI response documents and SSE chunks, byte for byte as the API sends them.

Streamed chunks are built by concatenating precomputed bytes around each token (tokens are
plain ASCII words, see ``tokens.VOCAB``): one JSON encode per stream instead of one per chunk.
"""

from __future__ import annotations

import json
from typing import Any

FINGERPRINT = "fp_corral_mock"
DONE = b"data: [DONE]\n\n"


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(rid: str, created: int, model: str, text: str, finish: str, use: dict[str, int]) -> bytes:
    """A non-streamed ``chat.completion``."""
    return _dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": use,
            "system_fingerprint": FINGERPRINT,
        }
    )


def text_completion(
    rid: str, created: int, model: str, choices: list[tuple[str, str]], use: dict[str, int]
) -> bytes:
    """A non-streamed ``text_completion``; ``choices`` is ``[(text, finish_reason), ...]``."""
    return _dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
                for i, (text, finish) in enumerate(choices)
            ],
            "usage": use,
            "system_fingerprint": FINGERPRINT,
        }
    )


def embeddings(model: str, data: list[list[float] | str], prompt_tokens: int) -> bytes:
    """An embeddings ``list``; each item is a float list or a base64 string."""
    return _dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    )


def model_card(model: str, created: int) -> dict[str, Any]:
    """One entry of ``/v1/models``."""
    return {"id": model, "object": "model", "created": created, "owned_by": "corral-mock"}


class StreamShape:
    """The SSE chunks of one streamed chat completion or text completion."""

    __slots__ = ("_head", "_tail", "chat")

    def __init__(self, chat: bool, rid: str, created: int, model: str, include_usage: bool) -> None:
        self.chat = chat
        obj = "chat.completion.chunk" if chat else "text_completion"
        self._head = (
            b'data: {"id":%s,"object":"%s","created":%d,"model":%s,"system_fingerprint":"%s","choices":'
            % (_dumps(rid), obj.encode(), created, _dumps(model), FINGERPRINT.encode())
        )
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def role(self) -> bytes:
        """The first chat chunk: the assistant role, empty content."""
        return (
            self._head
            + b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
            + (b'"finish_reason":null}]' + self._tail)
        )

    def token(self, index: int, token: bytes) -> bytes:
        """A chunk carrying one token of choice ``index``."""
        if self.chat:
            body = b'[{"index":%d,"delta":{"content":"%s"},"logprobs":null,"finish_reason":null}]'
        else:
            body = b'[{"index":%d,"text":"%s","logprobs":null,"finish_reason":null}]'
        return self._head + body % (index, token) + self._tail

    def finish(self, index: int, reason: str) -> bytes:
        """The chunk that ends choice ``index`` with ``reason``."""
        if self.chat:
            body = b'[{"index":%d,"delta":{},"logprobs":null,"finish_reason":"%s"}]'
        else:
            body = b'[{"index":%d,"text":"","logprobs":null,"finish_reason":"%s"}]'
        return self._head + body % (index, reason.encode()) + self._tail

    def usage(self, use: dict[str, int]) -> bytes:
        """The ``include_usage`` chunk: no choices, the usage of the whole request."""
        return self._head + b'[],"usage":' + _dumps(use) + b"}\n\n"
