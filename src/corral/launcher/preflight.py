"""Checks ``corral up`` makes before it starts anything, with the environment it will pass on."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.config import Plan

if TYPE_CHECKING:
    from corral.router.config import RouterSettings


@dataclass(frozen=True)
class RouterAuth:
    """What the router will find when the launcher starts it: its settings and how many keys."""

    settings: RouterSettings
    n_keys: int
    keys_env: str


def router_auth(plan: Plan, environ: Mapping[str, str] | None = None) -> RouterAuth | None:
    """The router's settings (from the file the launcher hands it) and the number of client
    keys in the environment it will inherit; None without a router."""
    from corral.router.config import RouterSettings, keys_env, parse_keys

    router = plan.get("router")
    if router is None or not router.files:
        return None
    table = tomllib.loads(next(iter(router.files.values()))).get("router", {})
    settings = RouterSettings.model_validate(table)
    env = {**(os.environ if environ is None else environ), **router.env}
    name = keys_env(settings)
    return RouterAuth(settings, len(parse_keys(env.get(name))) + len(settings.keys), name)


def router_auth_problem(plan: Plan, environ: Mapping[str, str] | None = None) -> str | None:
    """Why the router would refuse to start for lack of client keys (None: it would start).

    The router checks this itself (a restart in a shell without the keys fails the same way);
    checking here too makes ``corral up`` say so at once instead of after the router's retries.
    """
    from corral.router.config import auth_problem

    auth = router_auth(plan, environ)
    return auth_problem(auth.settings, auth.n_keys) if auth else None
