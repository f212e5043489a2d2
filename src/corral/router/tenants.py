"""The router's tenants: its keyring, their limits and their usage, as one object for the proxy.

Exists only when keys are configured (``[[router.keys]]``, ``keys_file`` or ``api_keys_env``):
without keys the proxy holds ``None`` and pays one ``is None`` test per request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from corral.router.config import RouterSettings
from corral.router.keys import Key, Keyring
from corral.router.limits import Limits
from corral.router.usage import Usage

log = logging.getLogger("corral.router")
_time = time.time


class Tenants:
    """Keys, limits and usage of one router process."""

    def __init__(self, settings: RouterSettings, env_keys: frozenset[str] = frozenset()) -> None:
        self.keyring = Keyring(settings.keys, settings.keys_file, env_keys)
        self.limits = Limits(settings.limits_store)
        self.limits.attach(self.keyring)
        self.usage = Usage(settings.usage_log, os.urandom(4).hex())
        self.reload_s = settings.keys_reload_s
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: RouterSettings, env_keys: frozenset[str]) -> Tenants | None:
        """The tenants of ``settings``, or None when no key of any kind is configured."""
        if not (settings.keys or settings.keys_file or env_keys):
            return None
        return cls(settings, env_keys)

    async def start(self) -> None:
        """Follow the keys file (a stat per ``keys_reload_s``)."""
        if self.keyring.file is not None:
            self._watch = asyncio.get_running_loop().create_task(self._follow(), name="keys-file")

    async def close(self) -> None:
        """Stop following the file; flush limits and close the usage log."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self.limits.close()
        self.usage.close()

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.reload_s)
            self.keyring.reload_if_changed()

    # -- per request --------------------------------------------------------------------------
    def lookup(self, authorization: str | None) -> Key | str:
        """The key presented, or the 401 message when there is none or it expired."""
        # The keyring's memo of valid keys first (Keyring.lookup's first step, inlined).
        key = self.keyring._seen.get(authorization) if authorization else None
        if key is None:
            key = self.keyring.lookup(authorization)
        if key is None:
            return "invalid or missing API key"
        if key.expires_at is not None and _time() >= key.expires_at:
            return f"API key {key.name!r} expired"
        return key

    def record(self, request_id: str, key: Key, model: str, prompt: int, completion: int) -> None:
        """An answer's usage: counters, log, and the tpm charge."""
        self.usage.record(request_id, key.name, model, prompt, completion)
        if key.tpm:
            if self.limits.shared:
                self.limits.charge_tokens(key, prompt + completion)
            else:  # Limits.charge_tokens' local case, inlined (every answer of a tpm key)
                key.state.tpm_bucket.tokens -= prompt + completion

    def allowed_models(self, key: Key, names: list[str], aliases: dict[str, str]) -> list[str]:
        """Of ``names`` (served models and aliases), those ``key`` may use (an alias: by its own
        name or by its target's)."""
        return [n for n in names if key.allows(n) or (n in aliases and key.allows(aliases[n]))]

    def view(self, queued: dict[str, int]) -> list[dict[str, Any]]:
        """Per key: in flight, queued, tokens/minute and limits (dashboard, ``/admin/keys``)."""
        out = []
        for k in self.keyring.by_name.values():
            out.append(
                {
                    "name": k.name,
                    "in_flight": k.state.in_flight,
                    "queued": queued.get(k.name, 0),
                    "tokens_per_minute": self.usage.tokens_per_minute(k.name),
                    "priority": k.priority,
                    "max_concurrency": k.max_concurrency,
                    "rpm": k.rpm,
                    "tpm": k.tpm,
                    "models": list(k.patterns),
                    "expires_at": k.expires_at,
                }
            )
        return out
