"""One live, shared connection to an upstream, and the raw request path through it.

Requests go through the SDK dispatcher as plain dicts: results reach the agent as the upstream
sent them (unknown fields, ``_meta``, ``input_required`` and its ``requestState`` intact). The
dispatcher mints the JSON-RPC id, so many agents can share the connection with colliding ids of
their own; the gateway supplies ids it can recognise (``il-<n>``) to correlate HTTP statuses.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import anyio
from mcp import Client
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import find_invalid_x_mcp_header, x_mcp_header_map
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    CONNECTION_CLOSED,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.core.backchannel import current_backchannel
from gateway.core.errors import GatewayError
from gateway.upstream.backroute import BackRouter
from gateway.upstream.translate import from_exception, from_malformed, from_sdk_error
from gateway.upstream.transport import HttpStatusLog
from gateway.upstream.wire import Malformed, PeerError, WireLog

log = logging.getLogger("interlock.upstream")

_LIST_PAGE_CAP = 100  # an upstream whose cursors never end must not hang the catalog
# The 2026-07-28 request envelope. A 2026-07-28 caller's request carries it; on a 2025-11-25
# connection it is not the gateway's to forward (that era agreed version, identity and
# capabilities at initialize, and dual-era servers refuse requests that carry it there).
_ENVELOPE_KEYS = (
    PROTOCOL_VERSION_META_KEY,
    CLIENT_INFO_META_KEY,
    CLIENT_CAPABILITIES_META_KEY,
    LOG_LEVEL_META_KEY,
)
# Messages of the errors the SDK makes up when an HTTP answer carried no JSON-RPC error of its own.
# A 400 or 404 that did carry one (e.g. -32021 missing capability) is the upstream speaking.
_SDK_STAND_INS = ("Server returned an error response", "Not Found", "Session terminated")


class UpstreamConnection:
    def __init__(
        self,
        server: str,
        client: Client,
        router: BackRouter,
        status_log: HttpStatusLog | None,
        wire: WireLog,
    ) -> None:
        self.server = server
        self.client = client
        self.router = router
        self.status_log = status_log
        self.wire = wire
        self.protocol_version = client.protocol_version
        self.modern = self.protocol_version in MODERN_PROTOCOL_VERSIONS
        self.closed = anyio.Event()
        self._ids = itertools.count(1)

    @property
    def capabilities(self) -> dict[str, Any]:
        return self.client.server_capabilities.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        timeout_s: float | None = None,
        log_level: str | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the raw result.

        ``log_level`` is the calling client's (``Caller.log_level``). A 2026-07-28 upstream sends
        log messages only for a request that carries it in ``_meta``; a 2025-11-25 upstream got
        it from ``logging/setLevel`` instead.

        Transport failures come back as ``GatewayError``; a JSON-RPC error the upstream chose to
        send stays an ``MCPError`` so non-tool methods can forward it unchanged.
        """
        session = self.client.session
        rid = f"il-{next(self._ids)}"
        out = dict(params or {})
        meta = dict(out.get("_meta") or {})
        out["_meta"] = meta
        channel = current_backchannel.get()
        opts: CallOptions = {"request_id": rid}
        if timeout_s is not None:
            opts["timeout"] = timeout_s
        client_token = meta.pop("progressToken", None)
        if channel is not None and client_token is not None:
            opts["on_progress"] = channel.progress  # the dispatcher mints a token of its own upstream
        if not self.modern:
            for key in _ENVELOPE_KEYS:
                meta.pop(key, None)
        data: dict[str, Any] = {"method": method, "params": out}
        session._stamp(data, opts)
        if self.modern and channel is not None:
            # The upstream must see what the calling client can do, not what the gateway can.
            meta[CLIENT_CAPABILITIES_META_KEY] = dict(channel.capabilities)
        if self.modern and log_level is not None:
            meta[LOG_LEVEL_META_KEY] = log_level  # the caller's opt-in, whichever era it speaks
        if not meta:
            out.pop("_meta", None)
        if channel is not None:
            self.router.inflight[rid] = channel
        self.wire.expect(rid)
        try:
            return await session._dispatcher.send_raw_request(method, out, opts)
        except anyio.get_cancelled_exc_class():
            raise
        except MCPError as exc:
            failure = self._failure(rid, exc)
            if failure is exc:
                raise
            raise failure from exc
        except GatewayError:
            raise
        except Exception as exc:
            raise from_exception(self.server, exc, None) from exc
        finally:
            self.router.inflight.pop(rid, None)
            self.wire.settle(rid)

    def _failure(self, rid: str, exc: MCPError) -> Exception:
        """What a failed request raises: the upstream's own JSON-RPC error stays an ``MCPError``;
        everything else becomes a ``GatewayError``.

        Whose error it is comes from the wire, never from the code: an upstream may send -32000
        or -32001 for its own failures, the codes the SDK uses for a closed connection and a
        timeout. Only an error with no answer from the upstream behind it is the SDK's.
        """
        verdict = self.wire.settle(rid)
        status = self.status_log.pop(rid) if self.status_log else None
        if isinstance(verdict, Malformed):
            return from_malformed(self.server, verdict.fault)
        if not (isinstance(verdict, PeerError) and verdict.raised_as(exc)):
            if exc.error.code == CONNECTION_CLOSED:
                self.closed.set()  # the supervisor reconnects
            return from_sdk_error(self.server, exc, status)
        if status is not None and (status[0] not in (400, 404) or exc.error.message in _SDK_STAND_INS):
            return from_exception(self.server, exc, status)  # the HTTP status says more
        return exc

    def learn_tools(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Teach the session each tool's ``x-mcp-header`` arguments (2026-07-28).

        Requests are stamped with ``Mcp-Param-*`` headers from this map; the SDK fills it only
        from its own typed listing, which the gateway does not use. A tool whose annotations are
        invalid is dropped, as the spec requires of clients.
        """
        if not self.modern:
            return tools
        kept: list[dict[str, Any]] = []
        maps: dict[str, Any] = {}
        for tool in tools:
            schema = tool.get("inputSchema")
            reason = find_invalid_x_mcp_header(schema)
            if reason is not None:
                log.warning(
                    "%s: tool %r dropped: invalid x-mcp-header (%s)", self.server, tool.get("name"), reason
                )
                continue
            maps[str(tool["name"])] = x_mcp_header_map(schema)
            kept.append(tool)
        self.client.session._x_mcp_header_maps = maps
        return kept

    async def list_all(self, method: str, key: str, *, timeout_s: float) -> list[dict[str, Any]]:
        """Walk every page of a list method and return the raw items."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(_LIST_PAGE_CAP):
            params = {"cursor": cursor} if cursor else None
            page = await self.request(method, params, timeout_s=timeout_s)
            batch = page.get(key)
            if isinstance(batch, list):
                items.extend(item for item in batch if isinstance(item, dict))
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        return items
