"""The messages a Supervisor's owner task handles, and what it knows of its current process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

import psutil

Kind = Literal["start", "stop", "restart", "detach"]


@dataclass
class Cmd:
    kind: Kind
    done: asyncio.Future[None]
    grace_s: float | None = None


@dataclass
class Exited:
    gen: int
    code: int | None


@dataclass
class Verdict:
    gen: int
    kind: Literal["startup", "readiness", "liveness"]
    ok: bool
    detail: str


@dataclass
class Timer:
    gen: int
    what: Literal["respawn", "start_timeout", "settle"]


@dataclass
class Gate:
    """The ``before_restart`` hook's answer: None lets the restart go ahead, a string vetoes it."""

    gen: int
    veto: str | None


Msg = Cmd | Exited | Verdict | Timer | Gate


@dataclass
class Child:
    pid: int
    proc: asyncio.subprocess.Process | None  # None: adopted, not our child
    ps: psutil.Process | None
    started_mono: float
    started_at: float
    tree: dict[int, psutil.Process] = field(default_factory=dict)
