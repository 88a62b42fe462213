"""Client identity: static API keys mapped to client names, compared in constant time.

With no keys configured the gateway serves anonymous clients, but only on loopback: an open
gateway on a network interface would hand every upstream credential to anyone who can reach it.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import ClientKey
from gateway.core.net import bearer_token, is_loopback_address

PRINCIPAL_SCOPE_KEY = "interlock.principal"
ANONYMOUS = "anonymous"


class ApiKeys:
    def __init__(self, clients: list[ClientKey]) -> None:
        self._keys = [(c.key.get_secret_value().encode(), c.name) for c in clients]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, token: str) -> str | None:
        """The client name for a bearer token. Every key is compared, so timing tells nothing."""
        presented = token.encode()
        found: str | None = None
        for key, name in self._keys:
            if hmac.compare_digest(presented, key) and found is None:
                found = name
        return found


class AuthMiddleware:
    """Puts the caller's identity in the ASGI scope, or answers 401 before MCP sees the request."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        principal = self._principal(scope)
        if principal is None:
            await _unauthorized(send, self.keys.enabled)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)

    def _principal(self, scope: Scope) -> str | None:
        if not self.keys.enabled:
            client = scope.get("client")
            return ANONYMOUS if is_loopback_address(client[0] if client else None) else None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                token = bearer_token(value.decode("latin-1"))
                return self.keys.identify(token) if token else None
        return None


async def _unauthorized(send: Send, keys_enabled: bool) -> None:
    message = (
        "missing or unknown API key: send 'Authorization: Bearer <key>'"
        if keys_enabled
        else "anonymous access is allowed only from loopback; configure [[gateway.clients]] keys"
    )
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"www-authenticate", b'Bearer realm="interlock"')]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
