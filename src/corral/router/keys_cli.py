"""``corral keys new``: make an API key, print it once, and store only its sha256.

The key goes to stdout (one line, so ``KEY=$(corral keys new team-a ...)`` works) and nowhere
else; the keys file gets the entry with ``key_sha256``. The file is rewritten whole through a
temporary file and a rename, so a router re-reading it never sees half an entry.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from corral.errors import ConfigError
from corral.router.keys import KeySpec, check_unique, digest, read_keys_file

KEY_PREFIX = "sk-corral-"


def new_key() -> str:
    """A fresh random key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def make_spec(name: str, key: str, fields: dict[str, Any]) -> KeySpec:
    """The spec for ``key``; ConfigError naming the flag when a value is wrong."""
    try:
        return KeySpec.model_validate({"name": name, "key_sha256": digest(key), **fields})
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "NAME"
        raise ConfigError(f"{flag}: {err['msg']}") from None


def toml_entry(spec: KeySpec, table: str) -> str:
    """``[[table]]`` with the spec's non-default fields, as TOML text."""
    data = spec.model_dump(exclude_defaults=True, mode="json")
    data = {"name": spec.name, "key_sha256": spec.key_sha256, **data}
    lines = [f"[[{table}]]"] + [f"{k} = {_toml_value(v)}" for k, v in data.items()]
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    """One TOML value, tables inline (tomli-w writes arrays of tables as one ``keys = [...]``
    array, which cannot be appended to a file that has one already)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def add_to_file(path: Path, spec: KeySpec) -> None:
    """Append ``spec`` to a TOML or JSON keys file (created when missing), atomically."""
    existing = read_keys_file(path)
    check_unique([*existing, spec], str(path))
    if path.suffix == ".json":
        raw = path.read_text() if path.exists() else ""
        doc: Any = json.loads(raw) if raw.strip() else {"keys": []}
        entries = doc["keys"] if isinstance(doc, dict) else doc
        entries.append(spec.model_dump(exclude_defaults=True, mode="json") | {"name": spec.name})
        entries[-1]["key_sha256"] = spec.key_sha256
        text = json.dumps(doc, indent=2) + "\n"
    else:
        text = path.read_text() if path.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        text += ("\n" if text else "") + toml_entry(spec, "keys")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def keys_new(name: str, fields: dict[str, Any], file: Path | None) -> str:
    """Make a key for ``name``; store its hash in ``file`` (or print a config block); return the key."""
    key = new_key()
    spec = make_spec(name, key, fields)
    if file is not None:
        add_to_file(file, spec)
        print(f"key {name!r} added to {file}; it is shown once, below.", file=sys.stderr)
    else:
        print("Add this to corral.toml (the key itself is shown once, below):\n", file=sys.stderr)
        print(toml_entry(spec, "router.keys"), file=sys.stderr)
    return key
