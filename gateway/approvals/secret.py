"""The secret that signs approval ``requestState``s.

Configured (``[approvals] secret``) when operators want to rotate it themselves; otherwise one
random secret is created on first start and kept in the state store, so every replica sharing the
store (and every restart) signs and verifies with the same one. Whoever can read the store can read
it; deployments where the store is less trusted than the gateway should configure it.

A gateway must start while its store is down (a replica restarted during a Redis outage would
otherwise crash-loop and take fail-open policies down with it), so ``SecretLoader`` reads the secret
in the background until the store answers; until then the approval gate refuses round trips.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from gateway.core.clock import Clock
from gateway.state.base import StateStore

log = logging.getLogger("interlock.approvals")

SECRET_KEY = "approvals:signing-secret"
_KEEP_S = 10 * 365 * 24 * 3600.0
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 5.0


async def signing_secret(store: StateStore, configured: SecretStr | None) -> bytes:
    if configured is not None:
        return configured.get_secret_value().encode()
    candidate = secrets.token_urlsafe(48)

    def keep(doc: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
        # First writer wins; everyone after reads the same secret.
        if doc is not None and isinstance(doc.get("secret"), str) and len(doc["secret"]) >= 32:
            return doc, str(doc["secret"])
        return {"secret": candidate}, candidate

    value: str = await store.update(SECRET_KEY, keep, ttl_s=_KEEP_S)
    return value.encode()


class SecretLoader:
    """Reads the signing secret and hands it to ``install``, retrying while the store is down."""

    def __init__(
        self,
        store: StateStore,
        configured: SecretStr | None,
        clock: Clock,
        install: Callable[[bytes], None],
    ) -> None:
        self.store = store
        self.configured = configured
        self.clock = clock
        self.install = install
        self.loaded = False
        self._failures = 0

    async def load_once(self) -> bool:
        """One attempt; True once the secret is installed."""
        if self.loaded:
            return True
        try:
            secret = await signing_secret(self.store, self.configured)
        except Exception as exc:  # unreachable store, or a refused command: try again later
            if self._failures == 0:
                log.warning(
                    "approval signing secret not read (%s); approval round trips are refused "
                    "until the state store answers (retrying in the background)",
                    exc,
                )
            self._failures += 1
            return False
        self.install(secret)
        self.loaded = True
        if self._failures:
            log.info("approval signing secret read from the state store; approval round trips enabled")
        return True

    async def keep_trying(self) -> None:
        """Retry with a growing delay (up to ``MAX_RETRY_S``) until the secret is installed."""
        delay = FIRST_RETRY_S
        while not await self.load_once():
            await self.clock.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)
