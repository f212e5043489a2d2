"""A list of registry URLs as config, flags and the sitter's settings take it: a list or ``a,b``."""

from __future__ import annotations


def url_list(value: object) -> object:
    """``a,b`` (or a list) -> ``"a,b"`` without trailing slashes; None when empty; ValueError for
    anything that is not an http(s) URL. Other types pass through for pydantic to refuse."""
    if isinstance(value, list | tuple):
        value = ",".join(str(u) for u in value)
    if not isinstance(value, str):
        return value
    urls = [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {u!r}")
    return ",".join(urls) or None
