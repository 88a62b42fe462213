"""Who is calling, and the way back to them, read off the SDK's request context.

This is the only place that looks inside SDK session objects; the pipeline sees a plain
``Caller`` and the upstream layer a ``BackChannel``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any, get_args
from weakref import WeakKeyDictionary

from mcp.server.context import ServerRequestContext
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, LOG_LEVEL_META_KEY, LoggingLevel
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.core import Caller
from gateway.core.call import SessionSource
from gateway.downstream.auth import PRINCIPAL_SCOPE_KEY

SESSION_META_KEY = "interlock/session"
"""A client-provided session hint in ``_meta`` (for stateless clients that want loop detection per
conversation rather than per connection)."""

STDIO_PRINCIPAL = "stdio"

MAX_HINT_CHARS = 128
"""A longer hint (or one with control characters) is kept as its digest: the session key names
state-store keys, so its length must not be the client's to choose."""
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "via")
"""Any of these says the peer is a proxy, whose connections carry many clients' requests."""

# Per legacy connection: capabilities and client info are fixed at initialize, so read them once.
_legacy_cache: WeakKeyDictionary[Any, tuple[dict[str, Any], str | None, str | None]] = WeakKeyDictionary()

LOG_LEVELS: tuple[str, ...] = get_args(LoggingLevel)
"""The RFC 5424 severities, least severe first (the order the SDK's literal declares)."""
UNSET_LOG_LEVEL = "debug"
"""A 2025-11-25 session that never sent ``logging/setLevel`` leaves the choice to the server (the
spec names no default). The SDK's 2025-11-25 servers then send every level; so does the gateway,
whatever era its upstream speaks, so a client hears the same either way."""
# Per legacy connection: the level its last logging/setLevel asked for.
_set_levels: WeakKeyDictionary[Any, str] = WeakKeyDictionary()


def raw_meta(ctx: ServerRequestContext[Any, Any]) -> dict[str, Any] | None:
    params = ctx.params
    meta = params.get("_meta") if params else None
    return dict(meta) if isinstance(meta, Mapping) else None


def build_caller(ctx: ServerRequestContext[Any, Any], hint_header: str, stdio_session: str) -> Caller:
    request = ctx.request
    meta = raw_meta(ctx) or {}
    principal = STDIO_PRINCIPAL
    if request is not None:
        principal = request.scope.get(PRINCIPAL_SCOPE_KEY, "anonymous")
    session_key, source = session_identity(ctx, principal, meta, hint_header, stdio_session)
    version = ctx.protocol_version
    if version in MODERN_PROTOCOL_VERSIONS:
        caps = meta.get(CLIENT_CAPABILITIES_META_KEY)
        capabilities = dict(caps) if isinstance(caps, Mapping) else {}
        info = meta.get(CLIENT_INFO_META_KEY)
        name = _str(info.get("name")) if isinstance(info, Mapping) else None
        ver = _str(info.get("version")) if isinstance(info, Mapping) else None
    else:
        capabilities, name, ver = _legacy_identity(ctx)
    return Caller(
        principal=principal,
        session_key=session_key,
        session_source=source,
        client_name=name,
        client_version=ver,
        protocol_version=version,
        capabilities=capabilities,
        log_level=_log_level(ctx, meta),
    )


def session_identity(
    ctx: ServerRequestContext[Any, Any],
    principal: str,
    meta: Mapping[str, Any],
    hint_header: str,
    stdio_session: str,
) -> tuple[str, SessionSource]:
    """The narrowest key the request gives for "the same agent", and how far it can be trusted.

    In order: the MCP session of a 2025-11-25 client (``alice/<Mcp-Session-Id>``; over stdio, the
    pipe's one handshake); a session hint (``alice/<hint>``, header first); the connection
    (``alice@127.0.0.1:53422``, or over stdio the process at the other end); else the principal
    alone. ``clientInfo`` is no identity: it names the software, and every copy of one agent sends
    the same. A principal name has no ``/`` or ``@``, so no hint can name a connection; a hint
    could name a session id, but only one of the same principal."""
    legacy = ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS
    request = ctx.request
    if request is None:
        if legacy:
            return stdio_session, "session"
        hint = _str(meta.get(SESSION_META_KEY))
        return (f"{principal}/{_bounded(hint)}", "hint") if hint else (stdio_session, "connection")
    session_id = request.headers.get("mcp-session-id")
    if legacy and session_id:
        return f"{principal}/{session_id}", "session"
    hint = request.headers.get(hint_header) or _str(meta.get(SESSION_META_KEY))
    if hint:
        return f"{principal}/{_bounded(hint)}", "hint"
    peer = _peer(request)
    if peer is not None:
        return f"{principal}@{peer}", "connection"
    return principal, "client"


def _peer(request: Any) -> str | None:
    """``host:port`` of the TCP connection the request came on, when that is one client's.

    Separate SDK clients each hold their own connection pool, and a client keeps its connection
    alive between calls (until it idles: uvicorn closes it after 5 s). A proxy's connections carry
    whoever it forwards, and a proxy address rewritten by uvicorn has no port (0): neither names a
    client."""
    headers = request.headers
    if any(name in headers for name in PROXY_HEADERS):
        return None
    client = request.scope.get("client")
    if not client or len(client) != 2:
        return None
    host, port = client
    if not host or not port:
        return None
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _bounded(text: str) -> str:
    if len(text) <= MAX_HINT_CHARS and text.isprintable():
        return text
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"~{digest}"


def remember_log_level(ctx: ServerRequestContext[Any, Any], level: str) -> None:
    """A 2025-11-25 session's ``logging/setLevel``: it holds for the session's later requests."""
    _set_levels[ctx.session._connection] = level


def _log_level(ctx: ServerRequestContext[Any, Any], meta: Mapping[str, Any]) -> str | None:
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return _str(meta.get(LOG_LEVEL_META_KEY))  # per request; absent means no logs
    return _set_levels.get(ctx.session._connection, UNSET_LOG_LEVEL)


def wants_log(threshold: str | None, level: object) -> bool:
    """Whether a message at ``level`` is at or above what the caller asked for (an unknown level
    on either side reads as not asked for, the safe direction)."""
    if threshold is None or threshold not in LOG_LEVELS or level not in LOG_LEVELS:
        return False
    return LOG_LEVELS.index(str(level)) >= LOG_LEVELS.index(threshold)


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
        self._log_level = caller.log_level
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
        if method == "notifications/message" and not wants_log(self._log_level, (params or {}).get("level")):
            return  # not asked for: a 2026-07-28 client that did not opt in, or below the level set
        outbound = self._ctx.session._request_outbound
        await outbound.notify(method, params)
