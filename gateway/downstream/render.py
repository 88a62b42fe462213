"""The one error renderer at the edge.

A tool-plane error becomes a ``CallToolResult`` with ``isError: true`` whose ``structuredContent``
is ``{"error": {...}}`` and whose text block is the same JSON; a protocol-plane error becomes a
JSON-RPC error. Anything that is not a ``GatewayError`` becomes a generic internal error with a
correlation id: a traceback never reaches an agent.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mcp.shared.exceptions import MCPError

from gateway.core.errors import GatewayError, InternalError

log = logging.getLogger("interlock.downstream")


def as_gateway_error(exc: BaseException, request_id: str) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    log.error("internal error [%s]", request_id, exc_info=exc)
    return InternalError(f"internal gateway error (correlation id {request_id})")


def tool_error(err: GatewayError, *, server: str | None, tool: str | None, request_id: str) -> dict[str, Any]:
    body = {"error": err.payload(server=server, tool=tool, request_id=request_id)}
    return {
        "content": [
            {"type": "text", "text": json.dumps(body, separators=(",", ":"), default=str)},
            *err.extra_content,
        ],
        "structuredContent": body,
        "isError": True,
    }


def protocol_error(err: GatewayError, *, server: str | None, tool: str | None, request_id: str) -> MCPError:
    body = {"error": err.payload(server=server, tool=tool, request_id=request_id)}
    return MCPError(code=err.jsonrpc_code, message=err.message, data=body)


def render(exc: BaseException, *, server: str | None, tool: str | None, request_id: str) -> dict[str, Any]:
    """Render for a tools/call: a tool-plane result, or raise the protocol-plane error."""
    err = as_gateway_error(exc, request_id)
    if err.plane == "protocol":
        raise protocol_error(err, server=server, tool=tool, request_id=request_id)
    return tool_error(err, server=server, tool=tool, request_id=request_id)
