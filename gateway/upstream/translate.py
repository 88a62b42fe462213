"""Translation of SDK, OS and HTTP failures into the gateway's error set, at the boundary.

Each translated error keeps its cause (``raise ... from exc``) so logs show what really happened,
while the agent sees one stable shape.
"""

from __future__ import annotations

import email.utils
import math
import time

import httpx2
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from gateway.core import errors as e

# JSON-RPC errors about the exchange itself, which the client must see as sent: malformed requests,
# unknown methods, and the MCP codes for header mismatch, unsupported version, a missing client
# capability and a required URL elicitation. Everything else an upstream raises during a tool call
# is a tool failure the model should read.
PROTOCOL_CODES = frozenset({-32700, -32600, -32601, -32602, -32020, -32021, -32022, -32042})


def is_protocol_error(exc: MCPError) -> bool:
    return exc.error.code in PROTOCOL_CODES


def retry_after_seconds(value: str | None) -> float | None:
    """Parse Retry-After as delta-seconds or an HTTP date (RFC 9110); None when it is neither.

    Upstreams send garbage here too ("soon", "inf", a broken date): that must read as "no advice",
    never as an exception or an infinite wait.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    return max(0.0, parsed.timestamp() - time.time())


def from_http_status(server: str, status: int, retry_after: str | None) -> e.GatewayError:
    details = {"http_status": status}
    wait = retry_after_seconds(retry_after)
    if status == 401:
        return e.Unauthorized(f"{server} rejected the gateway's credentials (HTTP 401)", details=details)
    if status == 403:
        return e.Forbidden(f"{server} refused the call (HTTP 403)", details=details)
    if status == 404:
        return e.NotFound(f"{server} answered HTTP 404", details=details)
    if status == 409:
        return e.Conflict(f"{server} answered HTTP 409 Conflict", details=details)
    if status == 429:
        return e.UpstreamRateLimited(
            f"{server} is rate limiting (HTTP 429)", retry_after_s=wait, details=details
        )
    if status in (502, 503, 504):
        return e.UpstreamUnavailable(
            f"{server} is unavailable (HTTP {status})", retry_after_s=wait, details=details
        )
    if status >= 500:
        return e.UpstreamError(f"{server} failed with HTTP {status}", details=details)
    return e.UpstreamError(f"{server} answered HTTP {status}", details=details)


def from_sdk_error(server: str, exc: MCPError, http_status: tuple[int, str | None] | None) -> e.GatewayError:
    """Classify an error the SDK raised itself, with no answer from the upstream behind it."""
    if http_status is not None:
        return from_http_status(server, *http_status)
    if exc.error.code == CONNECTION_CLOSED:
        return e.UpstreamUnavailable(f"the connection to {server} closed during the call")
    if exc.error.code == REQUEST_TIMEOUT:
        return e.UpstreamTimeout(f"{server} did not answer in time")
    return e.UpstreamUnavailable(f"the request to {server} failed: {exc.error.message[:300]}")


def from_malformed(server: str, fault: str) -> e.GatewayError:
    """The upstream answered, but not with a JSON-RPC response the gateway can read."""
    return e.UpstreamError(
        f"{server} sent an answer that is not valid JSON-RPC: {fault}",
        details={"reason": "malformed_response", "fault": fault},
    )


def from_exception(
    server: str, exc: BaseException, http_status: tuple[int, str | None] | None
) -> e.GatewayError:
    """Classify a failed upstream request. ``http_status`` is what the HTTP layer saw, if anything."""
    if isinstance(exc, e.GatewayError):
        return exc
    if http_status is not None:
        return from_http_status(server, *http_status)
    if isinstance(exc, MCPError):  # the upstream's own JSON-RPC error, whatever its code
        code = exc.error.code
        details = {"jsonrpc_code": code, "upstream_message": exc.error.message[:500]}
        return e.UpstreamError(f"{server} answered with an error: {exc.error.message[:300]}", details=details)
    if isinstance(exc, TimeoutError):
        return e.UpstreamTimeout(f"{server} did not answer in time")
    if isinstance(exc, httpx2.TimeoutException):
        return e.UpstreamTimeout(f"{server} did not answer in time ({type(exc).__name__})")
    if isinstance(exc, (httpx2.TransportError, OSError, EOFError)):
        return e.UpstreamUnavailable(f"{server} is unreachable: {type(exc).__name__}")
    return e.InternalError(f"unexpected failure talking to {server}: {type(exc).__name__}")
