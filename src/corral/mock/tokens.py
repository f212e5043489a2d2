"""Deterministic fake tokens and embeddings.

Everything here derives from ``crc32(seed, prompt)`` rather than ``hash()`` (salted per process)
or ``random.Random`` (slow to seed), so that every worker process and every run gives the same
output for the same seed and prompt, at a cost of a few microseconds.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import zlib

# Plain ASCII words: chunks can be built by concatenation, without JSON escaping.
_WORDS = (
    "the quick brown fox jumps over a lazy dog while corral keeps every llama in its pen "
    "and routes each token through fast loopback sockets to patient clients who wait for "
    "streams of mock text that look almost like language yet mean nothing at all today"
).split()
VOCAB: tuple[str, ...] = tuple(" " + w for w in _WORDS)
_N = len(VOCAB)
_STEP = 7  # coprime with _N: walks the whole vocabulary before repeating

# The "natural" answer length when the request does not ask to ignore EOS.
_MIN_NATURAL = 4
_NATURAL_SPAN = 60


def prompt_hash(seed: int, text: str) -> int:
    """A 32-bit hash of the prompt under ``seed``, stable across processes and runs."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"), seed & 0xFFFFFFFF)


def count_tokens(text: str) -> int:
    """A cheap token estimate: whitespace-separated words (at least 1)."""
    return len(text.split()) or 1


def plan(h: int, limit: int, ignore_eos: bool) -> tuple[list[str], str]:
    """The tokens to emit and the finish reason, given the hash and the token limit.

    Without ``ignore_eos`` the answer "naturally" ends after 4..63 tokens (``"stop"``); a
    smaller ``limit`` cuts it (``"length"``). With ``ignore_eos`` it runs to the limit, as vLLM.
    """
    natural = _MIN_NATURAL + (h >> 8) % _NATURAL_SPAN
    n, reason = (limit, "length") if ignore_eos or natural > limit else (natural, "stop")
    start = h % _N
    tokens = [VOCAB[(start + i * _STEP) % _N] for i in range(n)]
    tokens[0] = tokens[0].lstrip()  # answers do not begin with a space
    return tokens, reason


def embedding(seed: int, text: str, dim: int) -> list[float]:
    """A deterministic unit vector of ``dim`` floats for ``text``."""
    key = seed.to_bytes(8, "little", signed=True)
    raw = bytearray()
    counter = 0
    while len(raw) < dim:
        h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=64, key=key)
        h.update(counter.to_bytes(4, "little"))
        raw += h.digest()
        counter += 1
    values = [b - 127.5 for b in raw[:dim]]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def encode_base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format="base64"``: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
