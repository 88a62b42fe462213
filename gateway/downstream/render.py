"""The one error renderer at the edge.

A tool-plane error becomes a ``CallToolResult`` with ``isError: true``. The error object travels
in two places every client has: the first text block, as ``{"error": {...}}`` (what a model
reads), and ``_meta["interlock/error"]`` (what a program reads). ``structuredContent`` carries
``{"error": {...}}`` too, but only for a tool that declares no ``outputSchema``: the spec makes
structured results conform to that schema, and clients such as the MCP Inspector validate them
even when ``isError`` is set, so an error object there would hide the error behind a schema
violation. A protocol-plane error becomes a JSON-RPC error. Anything that is not a
``GatewayError`` becomes a generic internal error with a correlation id: a traceback never
reaches an agent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from mcp.shared.exceptions import MCPError

from gateway.core.errors import GatewayError, InternalError

log = logging.getLogger("interlock.downstream")

ERROR_META_KEY = "interlock/error"
"""Where a tool-plane error result carries the error object in ``_meta``."""


def as_gateway_error(exc: BaseException, request_id: str) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    log.error("internal error [%s]", request_id, exc_info=exc)
    return InternalError(f"internal gateway error (correlation id {request_id})")


def tool_error(
    err: GatewayError,
    *,
    server: str | None,
    tool: str | None,
    request_id: str,
    output_schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``output_schema`` is the tool's, as clients listed it; with one, no ``structuredContent``."""
    text = json.dumps(
        {"error": err.payload(server=server, tool=tool, request_id=request_id)},
        separators=(",", ":"),
        default=str,
    )
    # Read back, so every copy is plain JSON and equal to the text (details may hold any object).
    body = json.loads(text)
    result: dict[str, Any] = {
        "content": [{"type": "text", "text": text}, *err.extra_content],
        "isError": True,
        "_meta": {ERROR_META_KEY: body["error"]},
    }
    if output_schema is None:
        result["structuredContent"] = body
    return result


def protocol_error(err: GatewayError, *, server: str | None, tool: str | None, request_id: str) -> MCPError:
    body = {"error": err.payload(server=server, tool=tool, request_id=request_id)}
    return MCPError(code=err.jsonrpc_code, message=err.message, data=body)


def render(
    exc: BaseException,
    *,
    server: str | None,
    tool: str | None,
    request_id: str,
    output_schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Render for a tools/call: a tool-plane result, or raise the protocol-plane error."""
    err = as_gateway_error(exc, request_id)
    if err.plane == "protocol":
        raise protocol_error(err, server=server, tool=tool, request_id=request_id)
    return tool_error(err, server=server, tool=tool, request_id=request_id, output_schema=output_schema)
