"""The secret that signs approval ``requestState``s.

Configured (``[approvals] secret``) when operators want to rotate it themselves; otherwise one
random secret is created on first start and kept in the state store, so every replica sharing the
store (and every restart) signs and verifies with the same one. Whoever can read the store can read
it; deployments where the store is less trusted than the gateway should configure it.
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import SecretStr

from gateway.state.base import StateStore

SECRET_KEY = "approvals:signing-secret"
_KEEP_S = 10 * 365 * 24 * 3600.0


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
