"""Who is calling, and the way back to them, read off the SDK's request context.

This is the only place that looks inside SDK session objects; the pipeline sees a plain
``Caller`` and the upstream layer a ``BackChannel``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

from mcp.server.context import ServerRequestContext
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.core import Caller
from gateway.downstream.auth import PRINCIPAL_SCOPE_KEY

SESSION_META_KEY = "interlock/session"
"""A client-provided session hint in ``_meta`` (for stateless clients that want loop detection per
conversation rather than per client)."""

STDIO_PRINCIPAL = "stdio"

# Per legacy connection: capabilities and client info are fixed at initialize, so read them once.
_legacy_cache: WeakKeyDictionary[Any, tuple[dict[str, Any], str | None, str | None]] = WeakKeyDictionary()


def raw_meta(ctx: ServerRequestContext[Any, Any]) -> dict[str, Any] | None:
    params = ctx.params
    meta = params.get("_meta") if params else None
    return dict(meta) if isinstance(meta, Mapping) else None


def build_caller(ctx: ServerRequestContext[Any, Any], hint_header: str, stdio_session: str) -> Caller:
    request = ctx.request
    meta = raw_meta(ctx) or {}
    principal = STDIO_PRINCIPAL
    transport_session: str | None = stdio_session
    hint: str | None = None
    if request is not None:
        principal = request.scope.get(PRINCIPAL_SCOPE_KEY, "anonymous")
        transport_session = request.headers.get("mcp-session-id")
        hint = request.headers.get(hint_header)
    hint = hint or _str(meta.get(SESSION_META_KEY))
    version = ctx.protocol_version
    if version in MODERN_PROTOCOL_VERSIONS:
        caps = meta.get(CLIENT_CAPABILITIES_META_KEY)
        capabilities = dict(caps) if isinstance(caps, Mapping) else {}
        info = meta.get(CLIENT_INFO_META_KEY)
        name = _str(info.get("name")) if isinstance(info, Mapping) else None
        ver = _str(info.get("version")) if isinstance(info, Mapping) else None
    else:
        capabilities, name, ver = _legacy_identity(ctx)
    session_key = transport_session or (f"{principal}/{hint}" if hint else principal)
    if transport_session and request is not None:
        session_key = f"{principal}/{transport_session}"
    return Caller(
        principal=principal,
        session_key=session_key,
        client_name=name,
        client_version=ver,
        protocol_version=version,
        capabilities=capabilities,
    )


def _legacy_identity(ctx: ServerRequestContext[Any, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    connection = ctx.session._connection
    cached = _legacy_cache.get(connection)
    if cached is not None:
        return cached
    caps_model = ctx.session.client_capabilities
    caps = caps_model.model_dump(by_alias=True, mode="json", exclude_none=True) if caps_model else {}
    params = ctx.session.client_params
    info = params.client_info if params else None
    entry = (caps, info.name if info else None, info.version if info else None)
    _legacy_cache[connection] = entry
    return entry


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


class RequestBackChannel:
    """The calling client's request-scoped channel: progress, logs and server-to-client requests."""

    def __init__(self, ctx: ServerRequestContext[Any, Any], caller: Caller) -> None:
        self._ctx = ctx
        self.session_key = caller.session_key
        self.capabilities = caller.capabilities
        meta = raw_meta(ctx) or {}
        self._progress_token = meta.get("progressToken")

    async def request(self, method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        outbound = self._ctx.session._request_outbound
        return await outbound.send_raw_request(method, params, None)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self._progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self._progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        outbound = self._ctx.session._request_outbound
        await outbound.notify(method, params)
