"""The signed ``requestState`` of a 2026-07-28 ``input_required`` approval round trip.

In the stateless era the gateway does not hold the call while the human answers: it returns
``input_required`` with an elicitation request and a ``requestState``, and the client sends the call
again with the answer and that state. The state is the gateway's own memory of the exchange, so it
is sealed: ``base64url(body) "." base64url(HMAC-SHA256(secret, domain || body))``, where the body is
compact JSON binding the client, the call digest, an expiry and a random nonce to the payload.

``open`` refuses a state that was altered (``TamperedState``), is bound to another client or call
(``TamperedState``), is past its expiry (``ExpiredState``) or was already opened once
(``ReplayedState``: the nonce is recorded in the state store until the expiry, so every replica
refuses a second use). The MAC is compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

from gateway.core.clock import Clock
from gateway.state.base import StateStore

_DOMAIN = b"interlock.requestState.v1\x00"
_VERSION = 1
MAX_TOKEN_CHARS = 1024 * 1024
"""Room for an upstream's own state wrapped inside ours (see ``gateway.approvals.gate``)."""
MIN_SECRET_BYTES = 32
NONCE_MARGIN_S = 60.0
"""Nonces are remembered a little past the expiry, so clock skew between replicas cannot reopen one."""


class StateError(Exception):
    """A ``requestState`` the gateway refuses."""


class TamperedState(StateError):
    """Not a state this gateway sealed, altered since, or bound to another client or call."""


class ExpiredState(StateError):
    """Sealed by this gateway, but past its expiry."""


class ReplayedState(StateError):
    """Sealed by this gateway and still valid, but already used once."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or any(c in text for c in "=+/ \n"):
        raise TamperedState("requestState is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TamperedState("requestState is not base64url") from exc


def nonce_key(nonce: str) -> str:
    return f"approvals:nonce:{nonce}"


class StateSigner:
    def __init__(self, secret: bytes, clock: Clock, store: StateStore) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the requestState secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.clock = clock
        self.store = store

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, _DOMAIN + body, hashlib.sha256).digest()

    def seal(self, payload: dict[str, Any], *, client: str, call_digest: str, ttl_s: float) -> str:
        """A token carrying ``payload``, valid for ``ttl_s`` seconds, for this client and call only."""
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")
        body = {
            "v": _VERSION,
            "c": client,
            "d": call_digest,
            "e": self.clock.wall() + ttl_s,
            "n": secrets.token_urlsafe(16),
            "p": payload,
        }
        # ASCII: any string an upstream put in its own state (even a lone surrogate) seals safely.
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
        return f"{_b64encode(raw)}.{_b64encode(self._mac(raw))}"

    async def open(self, token: str, *, client: str, call_digest: str) -> dict[str, Any]:
        """The payload of ``token``, once: verify the MAC, the binding and the expiry, then spend it."""
        body = self.verify(token, client=client, call_digest=call_digest)
        expires: float = body["e"]
        nonce: str = body["n"]

        def spend(doc: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
            if doc is not None:
                return doc, False
            return {"expires": expires}, True

        ttl_s = max(1.0, expires - self.clock.wall() + NONCE_MARGIN_S)
        if not await self.store.update(nonce_key(nonce), spend, ttl_s=ttl_s):
            raise ReplayedState("this requestState was already used; call the tool again to ask anew")
        payload: dict[str, Any] = body["p"]
        return payload

    def verify(self, token: str, *, client: str, call_digest: str) -> dict[str, Any]:
        """The whole verified body, without spending its nonce (for inspection and tests)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise TamperedState("requestState is malformed")
        body_part, mac_part = token.split(".")
        raw, mac = _b64decode(body_part), _b64decode(mac_part)
        if not hmac.compare_digest(mac, self._mac(raw)):
            raise TamperedState("requestState signature does not match")
        # Past this point the body is ours: a failure to parse it is a bug, not an attack.
        body: dict[str, Any] = json.loads(raw)
        if body.get("v") != _VERSION:
            raise TamperedState(f"requestState version {body.get('v')!r} is not supported")
        if not hmac.compare_digest(str(body["c"]).encode(), client.encode()):
            raise TamperedState("requestState belongs to another client")
        if not hmac.compare_digest(str(body["d"]).encode(), call_digest.encode()):
            raise TamperedState("requestState belongs to a different call (tool or arguments changed)")
        if self.clock.wall() >= body["e"]:
            raise ExpiredState("requestState has expired; call the tool again to ask anew")
        return body
