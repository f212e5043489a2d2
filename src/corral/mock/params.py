"""Validation of inference request bodies, with OpenAI's messages and status codes.

Hand-written rather than pydantic: each check is a dict lookup, and the mock must stay far
cheaper per request than the router it benchmarks. Fields the mock does not model
(temperature, stop, tools, n > 1...) are accepted and ignored, as documented in docs/mock.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.mock.tokens import count_tokens


class BadRequest(Exception):
    """A request the API refuses; becomes an OpenAI error document."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code


@dataclass(slots=True)
class Generation:
    """A validated chat or text completion request."""

    model: str
    prompts: list[str]  # one per choice: chat has one, a batched completion one per prompt
    prompt_tokens: int
    limit: int
    ignore_eos: bool
    stream: bool
    include_usage: bool
    seed: int | None


def _missing(field: str) -> BadRequest:
    return BadRequest(
        f"Missing required parameter: '{field}'.", param=field, code="missing_required_parameter"
    )


def _int(doc: dict[str, Any], field: str, minimum: int) -> int | None:
    value = doc.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"'{field}' must be an integer >= {minimum}.", param=field, code="invalid_value")
    return value


def model_name(doc: dict[str, Any]) -> str:
    """The ``model`` field, which every inference request must carry."""
    model = doc.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string.", param="model", code="invalid_type")
    return model


def _common(doc: dict[str, Any], default_limit: int) -> tuple[int, bool, bool, bool, int | None]:
    limit = _int(doc, "max_completion_tokens", 1) or _int(doc, "max_tokens", 1) or default_limit
    stream = doc.get("stream") or False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean.", param="stream", code="invalid_type")
    options = doc.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise BadRequest(
                "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
            )
        if not isinstance(options, dict):
            raise BadRequest("'stream_options' must be an object.", param="stream_options")
        include_usage = bool(options.get("include_usage"))
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("'seed' must be an integer.", param="seed", code="invalid_type")
    return limit, bool(doc.get("ignore_eos")), stream, include_usage, seed


def _content_text(content: Any, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):  # content parts: only the text ones count
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    raise BadRequest(f"'messages[{i}].content' must be a string or a list of parts.", param=f"messages[{i}]")


def chat(doc: dict[str, Any], model: str, default_limit: int) -> Generation:
    """Validate a ``/v1/chat/completions`` body."""
    messages = doc.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", param="messages", code="invalid_value")
    parts: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"'messages[{i}]' must be an object with a 'role'.", param=f"messages[{i}]")
        parts.append(m["role"])
        parts.append(_content_text(m.get("content"), i))
    prompt = "\n".join(parts)
    limit, ignore_eos, stream, include_usage, seed = _common(doc, default_limit)
    return Generation(model, [prompt], count_tokens(prompt), limit, ignore_eos, stream, include_usage, seed)


def completion(doc: dict[str, Any], model: str, default_limit: int) -> Generation:
    """Validate a ``/v1/completions`` body (``prompt``: string, strings, tokens or token lists)."""
    prompt = doc.get("prompt")
    if prompt is None:
        raise _missing("prompt")
    prompts, tokens = _texts(prompt, "prompt")
    limit, ignore_eos, stream, include_usage, seed = _common(doc, default_limit)
    return Generation(model, prompts, tokens, limit, ignore_eos, stream, include_usage, seed)


def embedding_inputs(doc: dict[str, Any]) -> tuple[list[str], int]:
    """Validate an ``/v1/embeddings`` body's ``input``: the texts and their token count."""
    value = doc.get("input")
    if value is None:
        raise _missing("input")
    return _texts(value, "input")


def _texts(value: Any, field: str) -> tuple[list[str], int]:
    """A string, list of strings, token list or list of token lists -> texts and token count."""
    if isinstance(value, str):
        return [value], count_tokens(value)
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value), sum(count_tokens(v) for v in value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [" ".join(map(str, value))], len(value)
        if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(map(str, v)) for v in value], sum(len(v) for v in value)
    raise BadRequest(
        f"'{field}' must be a non-empty string, array of strings, or array of token arrays.",
        param=field,
        code="invalid_value",
    )
