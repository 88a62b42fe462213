"""Request handlers: each resolves the exposed name or URI, forwards, and renders failures once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from weakref import WeakSet

from mcp.server.context import HandlerResult, ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp_types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.catalog import Catalog, InvalidCursor, paginate
from gateway.config import Config
from gateway.core import Caller, CallNext, ToolCall, ToolResult, current_backchannel
from gateway.core.errors import GatewayError, UnknownTool, UpstreamError
from gateway.downstream.caller import RequestBackChannel, build_caller, new_request_id, remember_log_level
from gateway.downstream.render import protocol_error, render
from gateway.upstream import UpstreamPool
from gateway.upstream.results import malformed_result, result_fault

log = logging.getLogger("interlock.downstream")

Ctx = ServerRequestContext[Any, Any]
_PAGE_SIZE = 200
_MAX_INPUT_ROUNDS = 8
_CALL_KEYS = ("name", "arguments", "_meta")
RESOURCE_NOT_FOUND = -32002


Visibility = Callable[[Caller], list[Mapping[str, Any]]]
"""The tool definitions one caller may see (access policy and pins applied)."""


class Pipeline:
    """The chain every ``tools/call`` runs through (``gateway.pipeline.build_pipeline``), built once
    at start: guards read the policy in force per call, so a reload never rebuilds it."""

    def __init__(self, chain: CallNext) -> None:
        self.run = chain


class Handlers:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        pool: UpstreamPool,
        pipeline: Pipeline,
        visibility: Visibility | None = None,
    ) -> None:
        self.config = config
        self.visibility = visibility
        self.catalog = catalog
        self.pool = pool
        self.pipeline = pipeline
        self.bus = InMemorySubscriptionBus()
        self.connections: WeakSet[Any] = WeakSet()
        self.subscribers: dict[str, WeakSet[Any]] = {}
        self._stdio_session = new_request_id()

    # -- tools -----------------------------------------------------------------------------

    async def list_tools(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        caller = build_caller(ctx, self.config.gateway.session_hint_header, self._stdio_session)
        if self.visibility is not None:
            tools = self.visibility(caller)
        else:
            tools = [entry.definition for entry in self.catalog.tools.values()]
        return self._page(ctx, "tools", tools, params)

    async def call_tool(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        raw = ctx.params or {}
        name = str(raw.get("name"))
        rid = new_request_id()
        entry = self.catalog.tools.get(name)
        if entry is None:
            raise self._unknown_tool(name, rid)
        caller = build_caller(ctx, self.config.gateway.session_hint_header, self._stdio_session)
        meta = raw.get("_meta")
        call = entry.call(
            raw.get("arguments") or {},
            caller,
            rid,
            meta=meta if isinstance(meta, Mapping) else None,
            extra={k: v for k, v in raw.items() if k not in _CALL_KEYS},
        )
        channel = RequestBackChannel(ctx, caller)
        token = current_backchannel.set(channel)
        try:
            result = await self.pipeline.run(call)
            if result.input_required and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                result = await self._answer_input_requests(call, result, channel)
            completed = _complete(ctx, dict(result.raw))
            # The SDK would answer a result it cannot send in the caller's version with a bare
            # -32603; the caller reads a tool error instead.
            fault = result_fault(ctx.protocol_version, completed)
            if fault is not None:
                raise malformed_result(entry.server, fault)
            return completed
        except MCPError:
            raise  # an upstream's protocol error, forwarded as sent
        except Exception as exc:
            # The tool's outputSchema as clients listed it: an error must not break it.
            schema = entry.definition.get("outputSchema")
            rendered = render(exc, server=entry.server, tool=name, request_id=rid, output_schema=schema)
            return _complete(ctx, rendered)
        finally:
            current_backchannel.reset(token)

    async def _answer_input_requests(
        self, call: ToolCall, result: ToolResult, channel: RequestBackChannel
    ) -> ToolResult:
        """Bridge a 2026-07-28 upstream's input requests to a 2025-11-25 client, which only
        understands server-to-client requests, then retry with its answers."""
        for _ in range(_MAX_INPUT_ROUNDS):
            requests = result.raw.get("inputRequests") or {}
            answers: dict[str, Any] = {}
            for key, request in requests.items():
                answers[key] = await channel.request(str(request.get("method")), request.get("params"))
            extra = {**call.extra, "inputResponses": answers}
            if "requestState" in result.raw:
                extra["requestState"] = result.raw["requestState"]
            call = call.with_changes(extra=extra)
            result = await self.pipeline.run(call)
            if not result.input_required:
                return result
        raise UpstreamError(f"{call.server} kept asking for input after {_MAX_INPUT_ROUNDS} rounds")

    def _unknown_tool(self, name: str, rid: str) -> MCPError:
        suggestions = self.catalog.suggest(name)
        hint = f" Did you mean `{suggestions[0]}`?" if suggestions else ""
        err = UnknownTool(f"Unknown tool: {name!r}.{hint}", details={"suggestions": suggestions})
        return protocol_error(err, server=None, tool=name, request_id=rid)

    # -- resources -------------------------------------------------------------------------

    async def list_resources(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return self._page(ctx, "resources", self.catalog.resources, params)

    async def list_resource_templates(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return self._page(ctx, "resourceTemplates", self.catalog.templates, params)

    async def read_resource(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        uri = str((ctx.params or {}).get("uri"))
        server, original = self._route_uri(uri)
        result = await self._forward(ctx, server, "resources/read", {**(ctx.params or {}), "uri": original})
        contents = result.get("contents")
        if isinstance(contents, list):
            result["contents"] = [
                {**c, "uri": self.catalog.expose_uri(server, c["uri"])}
                if isinstance(c.get("uri"), str)
                else c
                for c in contents
            ]
        return result

    async def subscribe(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        uri = str((ctx.params or {}).get("uri"))
        server, original = self._route_uri(uri)
        self.subscribers.setdefault(uri, WeakSet()).add(ctx.session._connection)
        conn = self.pool.supervisors[server].conn
        # 2026-07-28 upstreams announce updates on their listen stream instead of per-URI subscriptions.
        if (
            conn is not None
            and not conn.modern
            and (conn.capabilities.get("resources") or {}).get("subscribe")
        ):
            await self._forward(ctx, server, "resources/subscribe", {"uri": original})
        return {}

    async def unsubscribe(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        uri = str((ctx.params or {}).get("uri"))
        subscribers = self.subscribers.get(uri)
        if subscribers is not None:
            subscribers.discard(ctx.session._connection)
        return {}

    def _route_uri(self, uri: str) -> tuple[str, str]:
        routed = self.catalog.route_uri(uri)
        if routed is None:
            raise MCPError(code=RESOURCE_NOT_FOUND, message=f"Resource not found: {uri}", data={"uri": uri})
        return routed

    # -- prompts and completion ------------------------------------------------------------

    async def list_prompts(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return self._page(ctx, "prompts", [p.definition for p in self.catalog.prompts.values()], params)

    async def get_prompt(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        name = str((ctx.params or {}).get("name"))
        entry = self.catalog.prompts.get(name)
        if entry is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {name!r}", data={"name": name})
        return await self._forward(
            ctx, entry.server, "prompts/get", {**(ctx.params or {}), "name": entry.upstream_name}
        )

    async def complete(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        raw = dict(ctx.params or {})
        ref = dict(raw.get("ref") or {})
        if ref.get("type") == "ref/prompt":
            entry = self.catalog.prompts.get(str(ref.get("name")))
            if entry is None:
                raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {ref.get('name')!r}")
            server, ref["name"] = entry.server, entry.upstream_name
        else:
            server, ref["uri"] = self._route_uri(str(ref.get("uri")))
        return await self._forward(ctx, server, "completion/complete", {**raw, "ref": ref})

    async def set_logging_level(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        """2025-11-25 only. The level holds for the session: a 2025-11-25 upstream hears it now, a
        2026-07-28 one in the opt-in the gateway puts on each of the session's requests."""
        level = (ctx.params or {}).get("level")
        remember_log_level(ctx, str(level))
        caller = build_caller(ctx, self.config.gateway.session_hint_header, self._stdio_session)
        for sid in self.pool.supervisors:
            try:
                conn = await self.pool.connection(sid, caller)
                if not conn.modern and "logging" in conn.capabilities:
                    await conn.request("logging/setLevel", {"level": level}, timeout_s=5)
            except Exception as exc:
                log.info("%s: logging/setLevel not applied (%s)", sid, type(exc).__name__)
        return {}

    # -- shared ----------------------------------------------------------------------------

    async def _forward(self, ctx: Ctx, server: str, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        caller = build_caller(ctx, self.config.gateway.session_hint_header, self._stdio_session)
        token = current_backchannel.set(RequestBackChannel(ctx, caller))
        try:
            return _complete(ctx, await self.pool.request(server, method, params, caller))
        except GatewayError as exc:
            raise protocol_error(exc, server=server, tool=None, request_id=new_request_id()) from exc
        finally:
            current_backchannel.reset(token)

    def _page(self, ctx: Ctx, key: str, items: list[Any], params: Any) -> dict[str, Any]:
        cursor = getattr(params, "cursor", None) if params is not None else None
        try:
            page, next_cursor = paginate(items, cursor, _PAGE_SIZE, self.catalog.version)
        except InvalidCursor:
            raise MCPError(code=INVALID_PARAMS, message="Invalid cursor", data={"cursor": cursor}) from None
        out: dict[str, Any] = {key: page}
        if next_cursor:
            out["nextCursor"] = next_cursor
        return _complete(ctx, out)

    async def track_connection(
        self, ctx: Ctx, call_next: Callable[[Ctx], Awaitable[HandlerResult]]
    ) -> HandlerResult:
        """Middleware: remember connections with a standalone channel, to relay list changes."""
        connection = ctx.session._connection
        if connection.has_standalone_channel:
            self.connections.add(connection)
        return await call_next(ctx)

    # -- events from upstreams -------------------------------------------------------------

    async def announce_lists_changed(self) -> None:
        for event in (ToolsListChanged(), PromptsListChanged(), ResourcesListChanged()):
            await self.bus.publish(event)
        for method in (
            "notifications/tools/list_changed",
            "notifications/prompts/list_changed",
            "notifications/resources/list_changed",
        ):
            await self._broadcast(list(self.connections), method, None)

    async def announce_resource_updated(self, server: str, uri: str) -> None:
        exposed = self.catalog.expose_uri(server, uri)
        await self.bus.publish(ResourceUpdated(uri=exposed))
        await self._broadcast(
            list(self.subscribers.get(exposed, ())), "notifications/resources/updated", {"uri": exposed}
        )

    async def _broadcast(self, connections: list[Any], method: str, params: Mapping[str, Any] | None) -> None:
        for connection in connections:
            try:
                await connection.outbound.notify(method, params)
            except Exception as exc:  # a gone client must not stop the others hearing it
                log.debug("notification %s not delivered: %s", method, exc)


def _complete(ctx: Ctx, result: dict[str, Any]) -> dict[str, Any]:
    """2026-07-28 requires ``resultType``; a 2025-era upstream's result does not carry one."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and "resultType" not in result:
        result["resultType"] = "complete"
    return result
