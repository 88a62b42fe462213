"""The lowlevel MCP ``Server`` the gateway presents, with one handler per forwarded method."""

from __future__ import annotations

from typing import Any, cast

import mcp_types as types
from mcp.server.caching import CacheHint
from mcp.server.lowlevel.server import NotificationOptions, RequestHandler, Server
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import ListenHandler
from mcp_types.methods import CACHEABLE_METHODS, CacheableMethod
from pydantic import BaseModel

from gateway import __version__
from gateway.downstream.handlers import Handlers
from gateway.downstream.params import explain_invalid_params

INSTRUCTIONS = (
    "Tools are served through the Interlock gateway. A failed call returns a JSON error with "
    "`code`, `retryable`, `retry_after_s` and a `hint`: follow the hint, and never invent a result."
)

_FRESH_NOW = CacheHint(ttl_ms=0, scope="private")


class GatewayServer(Server[Any]):
    """Declares list-changed support: the gateway relays every upstream's change notifications."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        options = notification_options or NotificationOptions(
            prompts_changed=True, resources_changed=True, tools_changed=True
        )
        return super().create_initialization_options(options, experimental_capabilities, extensions)


def build_server(handlers: Handlers) -> GatewayServer:
    server = GatewayServer(
        "interlock",
        version=__version__,
        instructions=INSTRUCTIONS,
        # The catalog can change at any moment and will differ per client once access policies
        # apply: results are fresh only now, and private to the caller. An upstream's own hints win.
        cache_hints=dict.fromkeys(cast("frozenset[CacheableMethod]", CACHEABLE_METHODS), _FRESH_NOW),
    )
    # Registered by method name: the handlers return raw dicts, so unknown fields survive.
    routes: list[tuple[str, type[BaseModel], RequestHandler[Any, Any]]] = [
        ("tools/list", types.PaginatedRequestParams, handlers.list_tools),
        ("tools/call", types.CallToolRequestParams, handlers.call_tool),
        ("resources/list", types.PaginatedRequestParams, handlers.list_resources),
        ("resources/templates/list", types.PaginatedRequestParams, handlers.list_resource_templates),
        ("resources/read", types.ReadResourceRequestParams, handlers.read_resource),
        ("resources/subscribe", types.SubscribeRequestParams, handlers.subscribe),
        ("resources/unsubscribe", types.UnsubscribeRequestParams, handlers.unsubscribe),
        ("subscriptions/listen", types.SubscriptionsListenRequestParams, ListenHandler(handlers.bus)),
        ("prompts/list", types.PaginatedRequestParams, handlers.list_prompts),
        ("prompts/get", types.GetPromptRequestParams, handlers.get_prompt),
        ("completion/complete", types.CompleteRequestParams, handlers.complete),
        # Deprecated in 2026-07-28 but part of 2025-11-25, which the gateway serves too.
        ("logging/setLevel", types.SetLevelRequestParams, handlers.set_logging_level),
    ]
    for method, params_type, handler in routes:
        server.add_request_handler(method, params_type, handler)
    # Tracing arrives with the observability issue; until then the per-message span is pure overhead.
    # Outermost first: a params failure is explained whatever the inner middleware did with it.
    server.middleware = [explain_invalid_params, handlers.track_connection]
    return server
