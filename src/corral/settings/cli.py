"""Command-line options derived from a settings model, so no flag wall copies its fields.

Each field becomes ``--field-name`` (plus the spellings in its ``flags`` metadata), typed from
the field, defaulting to None (= not given: the file or the model's default applies), with the
field's description as help and its default shown. List and dict fields are given as text the
model's validators parse (``cli = "shlex" | "csv"``) or repeated (``cli = "pairs"``).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


def _meta(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _scalar(annotation: Any) -> Any:
    """``int | None`` -> int; anything else as it is."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _cli_type(field: FieldInfo) -> Any:
    form = _meta(field).get("cli")
    if form == "pairs":
        return list[str]
    if form in ("shlex", "csv"):
        return str
    kind = _scalar(field.annotation)
    if kind not in (str, int, float, bool):
        raise TypeError(f"no command-line form for {field.annotation!r}: set cli= in its metadata")
    return kind


def _help(field: FieldInfo) -> str:
    text = field.description or ""
    default = field.default
    if default is not PydanticUndefined and default not in (None, [], {}) and "[default:" not in text:
        text += f" [default: {default}]"  # one way of writing defaults, as typer shows its own
    return text


def options(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One keyword parameter (a ``typer.Option``) per field of ``model``."""
    params = []
    for name, field in model.model_fields.items():
        meta = _meta(field)
        if meta.get("cli") == "file":
            continue  # a table: given in the settings or config file only, no flag
        flags = [f"--{name.replace('_', '-')}", *meta.get("flags", [])]
        option = typer.Option(None, *flags, help=_help(field), envvar=meta.get("envvar"), show_default=False)
        kind = _cli_type(field)
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None)
        )
    return params


def command(
    model: type[BaseModel], extra: list[inspect.Parameter], run: Callable[[dict[str, Any]], None]
) -> Callable[..., None]:
    """A function typer can register: the model's options plus ``extra``; calls ``run(values)``
    with every parameter by name (None = not given)."""

    def cmd(**values: Any) -> None:
        run(values)

    cmd.__signature__ = inspect.Signature([*options(model), *extra])  # type: ignore[attr-defined]
    cmd.__doc__ = run.__doc__
    return cmd


def _is_secret(name: str) -> bool:
    return name.endswith("token") or name == "env"


def as_flags(settings: BaseModel, *, mask: bool = True) -> list[str]:
    """The flags that would give ``settings`` (fields left at their default are left out); with
    ``mask``, tokens and environment values read ``***`` (for showing a plan, never for running)."""
    import shlex

    out: list[str] = []
    for name in sorted(settings.model_fields_set, key=list(type(settings).model_fields).index):
        field = type(settings).model_fields[name]
        value = getattr(settings, name)
        if value is None or value == field.default:
            continue
        flag = f"--{name.replace('_', '-')}"
        form = _meta(field).get("cli")
        if form == "file":
            continue
        if form == "pairs":
            for k, v in value.items():
                out += [flag, f"{k}={'***' if mask else v}"]
            continue
        if form == "shlex":
            text = shlex.join(value)
        elif form == "csv":
            text = ",".join(map(str, value))
        else:
            text = str(value)
        out += [flag, "***" if mask and _is_secret(name) else text]
    return out
