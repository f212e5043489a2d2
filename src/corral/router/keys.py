"""API keys with scopes, limits and priorities: ``[[router.keys]]``, a keys file, and the env list.

A key is never held in plain text: the config and the keys file carry ``key_sha256`` (hex
sha256 of the key), and a request's key is found by the sha256 of what it presents. The dict
lookup runs on the digest, so its timing depends on the digest and not on how many leading
characters of the secret matched; the one comparison of the digests themselves uses
:func:`hmac.compare_digest`. Keys are never logged: messages name the key's ``name`` only.

The sha256 was most of what keys cost per request, so a key that matched once is remembered:
:class:`Keyring` keeps the ``Authorization`` values that matched (at most ``SEEN_MAX``, only
valid ones, forgotten on every reload) and finds a repeat with one dict lookup. That lookup
hashes the presented string with the interpreter's per-process random SipHash key and compares
strings only on a full hash match, so its timing tells nothing about a guess's prefix; the values
kept are what every request in flight holds in memory anyway, and are never logged or shown.

Live state (requests in flight, rate buckets) lives in :class:`KeyState`, one per key name, so a
reload of the keys file keeps counting requests that started under the old definition.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
import os
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from corral.errors import ConfigError

log = logging.getLogger("corral.router")

try:  # CPython's own sha256: ~1 µs less per call than OpenSSL 3's EVP fetch behind hashlib
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found]  # 3.11
except ImportError:  # pragma: no cover - other Pythons
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,no-redef]  # 3.12+
    except ImportError:
        _sha256 = hashlib.sha256

KeyName = str
SEEN_MAX = 4096  # remembered Authorization values (valid keys only); all forgotten when full


class KeySpec(BaseModel):
    """One ``[[router.keys]]`` entry (or one entry of the keys file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$", max_length=64)
    key_sha256: str
    models: list[str] = Field(default_factory=lambda: ["*"])  # globs (fnmatch), on the requested name
    max_concurrency: int = Field(default=0, ge=0)  # 0 = no limit
    rpm: int = Field(default=0, ge=0)  # requests per minute, 0 = no limit
    tpm: int = Field(default=0, ge=0)  # tokens per minute (prompt + completion, from usage)
    priority: int = 0  # lower is served first from the queue (as vLLM's priority scheduling)
    expires: datetime | date | None = None  # naive times are UTC

    @model_validator(mode="before")
    @classmethod
    def _no_plain_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "key" in data:
            raise ValueError(
                "a key is never stored: give key_sha256 (hex sha256 of the key); "
                "`corral keys new NAME` makes a key and its hash"
            )
        return data

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.strip().lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be 64 hex digits (the sha256 of the key)")
        return v

    def expires_at(self) -> float | None:
        """Expiry as a Unix time (a date expires at its midnight UTC), or None."""
        e = self.expires
        if e is None:
            return None
        if not isinstance(e, datetime):
            e = datetime(e.year, e.month, e.day, tzinfo=UTC)
        elif e.tzinfo is None:
            e = e.replace(tzinfo=UTC)
        return e.timestamp()


def digest(key: str) -> str:
    """The hex sha256 of a key, as ``key_sha256`` holds it."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class KeyState:
    """What a key is doing now: requests in flight and queued (survives reloads, by name)."""

    __slots__ = ("in_flight", "name", "queued", "rpm_bucket", "tpm_bucket")

    def __init__(self, name: str) -> None:
        self.name = name
        self.in_flight = 0
        self.queued = 0
        self.rpm_bucket: Any = None  # corral.router.limits.Bucket, set by Limits
        self.tpm_bucket: Any = None


class Key:
    """A resolved key: its spec's values as plain attributes (read on the hot path)."""

    __slots__ = (
        "_allowed",
        "digest",
        "expires_at",
        "limited",
        "max_concurrency",
        "name",
        "patterns",
        "priority",
        "rpm",
        "state",
        "tpm",
    )

    def __init__(self, spec: KeySpec, state: KeyState) -> None:
        self.name = spec.name
        self.digest = bytes.fromhex(spec.key_sha256)  # raw: no hex formatting per request
        self.patterns = tuple(spec.models)
        self.max_concurrency = spec.max_concurrency
        self.rpm = spec.rpm
        self.tpm = spec.tpm
        self.priority = spec.priority
        self.expires_at = spec.expires_at()
        self.limited = bool(spec.max_concurrency or spec.rpm or spec.tpm)
        self.state = state
        self._allowed: dict[str, bool] = {}

    def allows(self, model: str) -> bool:
        """Whether ``model`` matches one of the key's globs (memoised per model name)."""
        ok = self._allowed.get(model)
        if ok is None:
            ok = any(fnmatch.fnmatchcase(model, p) for p in self.patterns)
            if len(self._allowed) < 4096:  # client-chosen names: bound the memo
                self._allowed[model] = ok
        return ok


def env_specs(keys: frozenset[str]) -> list[KeySpec]:
    """The flat ``api_keys_env`` keys as unscoped key specs, named by a short digest prefix."""
    out = []
    for k in sorted(keys):
        d = digest(k)
        out.append(KeySpec(name=f"env-{d[:8]}", key_sha256=d))
    return out


def read_keys_file(path: str | Path) -> list[KeySpec]:
    """The keys in a TOML (``[[keys]]``) or JSON (``{"keys": [...]}`` or ``[...]``) file.

    An absent file holds no keys. Errors are ConfigErrors naming the file and the field.
    """
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=file) from None
    try:
        if file.endswith(".json"):
            doc: Any = json.loads(raw) if raw.strip() else {}
        else:
            doc = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse: {exc}", file=file) from None
    entries = doc.get("keys", []) if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ConfigError("'keys' must be a list of tables", file=file, field="keys")
    specs = []
    for i, entry in enumerate(entries):
        try:
            specs.append(KeySpec.model_validate(entry))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            field = f"keys[{i}]" + (f".{where}" if where else "")
            raise ConfigError(err["msg"], file=file, field=field) from None
    return specs


def check_unique(specs: list[KeySpec], where: str) -> None:
    """Names and hashes must each be unique (a hash twice would make the key ambiguous)."""
    names: set[str] = set()
    hashes: set[str] = set()
    for s in specs:
        if s.name in names:
            raise ConfigError(f"key name {s.name!r} appears twice", file=where)
        if s.key_sha256 in hashes:
            raise ConfigError(f"key {s.name!r} has the same key_sha256 as another key", file=where)
        names.add(s.name)
        hashes.add(s.key_sha256)


class Keyring:
    """Every key the router accepts, by digest; ``enabled`` is False when auth is off."""

    def __init__(
        self,
        static: list[KeySpec],
        file: str | None = None,
        env_keys: frozenset[str] = frozenset(),
    ) -> None:
        self.static = [*static, *env_specs(env_keys)]
        self.file = file
        self.enabled = bool(self.static) or file is not None
        self.states: dict[str, KeyState] = {}
        self.by_digest: dict[bytes, Key] = {}
        self.by_name: dict[str, Key] = {}
        self._seen: dict[str, Key] = {}  # Authorization value -> its key (see the module doc)
        self._stamp: tuple[int, int, int] | None = None
        self.on_change: list[Any] = []  # callbacks(keyring) after a (re)load
        self.load()

    # -- loading ----------------------------------------------------------------------------
    def load(self) -> None:
        """Read the keys file (if any) and rebuild the tables; ConfigError when it is invalid."""
        specs = list(self.static)
        if self.file is not None:
            self._stamp = _stamp(self.file)
            specs += read_keys_file(self.file)
        check_unique(specs, self.file or "[router.keys]")
        self._install(specs)

    def _install(self, specs: list[KeySpec]) -> None:
        by_digest: dict[bytes, Key] = {}
        by_name: dict[str, Key] = {}
        states: dict[str, KeyState] = {}
        for s in specs:
            st = self.states.get(s.name) or KeyState(s.name)
            states[s.name] = st
            k = Key(s, st)
            by_digest[k.digest] = k
            by_name[k.name] = k
        self.states, self.by_digest, self.by_name = states, by_digest, by_name
        self._seen = {}  # a removed or changed key must not stay valid
        for cb in self.on_change:
            cb(self)

    def reload_if_changed(self) -> bool:
        """Re-read the keys file when its mtime/size/inode changed; keep the old keys if it is bad."""
        if self.file is None or _stamp(self.file) == self._stamp:
            return False
        try:
            self.load()
        except ConfigError as exc:
            self._stamp = _stamp(self.file)  # do not retry a bad file every tick; wait for a change
            log.warning("keys file not reloaded, keeping %d keys: %s", len(self.by_digest), exc)
            return False
        log.warning("keys file %s reloaded: %d keys", self.file, len(self.by_digest))
        return True

    # -- lookup -----------------------------------------------------------------------------
    def lookup(self, authorization: str | None) -> Key | None:
        """The key presented as ``Authorization: Bearer KEY``; None when unknown."""
        if not authorization:
            return None
        k = self._seen.get(authorization)
        if k is not None:
            return k
        if authorization[:7] != "Bearer ":
            return None
        d = _sha256(authorization[7:].encode("utf-8", "surrogateescape")).digest()
        k = self.by_digest.get(d)
        if k is None or not hmac.compare_digest(k.digest, d):
            return None
        seen = self._seen
        if len(seen) >= SEEN_MAX:
            seen.clear()  # more distinct keys than that: start over (bounded, O(1) per request)
        seen[authorization] = k
        return k


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
