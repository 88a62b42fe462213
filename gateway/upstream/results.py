"""Whether a ``tools/call`` result is one at all, by the SDK's own schema for a protocol version.

The SDK's server checks every result it sends against the caller's version and turns one that
fails into a bare -32603 "Handler returned an invalid result" (with a traceback in the log). An
upstream's ``content`` that is not a list, or ``structuredContent`` that is not an object, would
reach an agent that way: a protocol error it cannot read, about a tool that merely answered
wrongly. The gateway asks the same question first, where the result arrives (so every guard
above sees a typed ``upstream_error``) and where it leaves (in the caller's version).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp_types import CORE_RESULT_TYPES, CallToolResult
from mcp_types import methods as schema
from mcp_types.version import KNOWN_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from gateway.core.errors import UpstreamError


def result_fault(version: str | None, result: Mapping[str, Any]) -> str | None:
    """What keeps ``result`` from being a ``tools/call`` result of ``version``; None if nothing.

    A 2026-07-28 result of an extension's own ``resultType`` belongs to that extension, and a
    version the SDK has no schema for has nothing to check against: both pass, as in the SDK.
    """
    if version not in KNOWN_PROTOCOL_VERSIONS:
        return None
    try:
        if version not in MODERN_PROTOCOL_VERSIONS:
            schema.validate_server_result("tools/call", version, result)
            return None
        result_type = result.get("resultType", "complete")  # absent means complete (spec)
        if result_type == "complete":
            # Not the 2026-07-28 surface: a complete result that fails it passes there as an input
            # request, which the SDK then sends with its content stripped.
            CallToolResult.model_validate(result, by_name=False)
        elif result_type in CORE_RESULT_TYPES:
            schema.validate_server_result("tools/call", version, result)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where or 'the result'}: {first['msg']}"
    return None


def malformed_result(server: str, fault: str) -> UpstreamError:
    return UpstreamError(
        f"{server} answered with a result that is not a valid tool result ({fault})",
        details={"reason": "malformed_result", "fault": fault},
    )
