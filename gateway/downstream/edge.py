"""The first look at every POST to ``/mcp``: what no MCP server can serve is refused here, in JSON-RPC.

The SDK's two HTTP paths disagree about malformed input, and some of what they let through hurts
everyone else: the 2026-07-28 path parses with ``json.loads``, which accepts lone UTF-16
surrogates (forwarding one makes the SDK's stdio writer raise and kills that upstream for every
client) and nesting that a Python upstream's parser drops without an answer (the call then hangs
for its whole timeout). The 2025-11-25 path answers a request whose ``id`` is null, a float, an
object or a boolean with ``202 Accepted`` and never replies, and reports batches or a missing
``method`` as ``-32602`` with a pydantic dump. Its body limit and header checks answer in plain text.

So one check runs before either path, with the parser the SDK's 2025 path and Python upstreams
use (pydantic-core's), and answers every refusal as a JSON-RPC error: parse errors ``-32700``,
malformed envelopes ``-32600``, a body over ``max_body_bytes`` ``413`` with ``payload_too_large``.
A well-formed message passes on untouched; the SDK still parses and validates it as before.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import RequestId
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic_core import from_json
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.core.errors import PayloadTooLarge
from gateway.downstream.caller import new_request_id

PARSE_ERROR = -32700
INVALID_REQUEST = -32600

_BATCH = "Batches are not supported: send each JSON-RPC message in a POST of its own."
_NOT_AN_OBJECT = "The body must be one JSON-RPC message: a JSON object."
# The SDK keeps one response stream per id and session: a second request with an id still in
# flight takes over the first one's stream, and the first request is never answered.
_ID_IN_FLIGHT = "A request with id {rid} is still in flight in this session; give every request its own id."
_BAD_ID = (
    "'id' must be a string or an integer (MCP does not allow null); leave 'id' out to send a notification."
)
# pydantic-core's wording, completed with what the sender should do about it.
_PARSE_HINTS = (
    ("surrogate", "a \\u escape is half of a UTF-16 surrogate pair; send valid Unicode"),
    ("hex escape", "a \\u escape is cut short or half of a UTF-16 surrogate pair; send valid Unicode"),
    ("unicode code point", "the body is not valid UTF-8"),
    ("recursion limit", "the JSON is nested deeper than 200 levels"),
)

Refusal = tuple[Any, int, str]
"""The id to answer with, the JSON-RPC error code and its message."""


def inspect_message(body: bytes) -> tuple[Any, Refusal | None]:
    """The decoded message, and why it is not one an MCP server can answer (None when it is)."""
    try:
        message = from_json(body)
    except ValueError as exc:
        return None, (None, PARSE_ERROR, _parse_message(str(exc)))
    return message, _envelope_refusal(message)


def _envelope_refusal(message: Any) -> Refusal | None:
    if isinstance(message, list):
        return None, INVALID_REQUEST, _BATCH
    if not isinstance(message, dict):
        return None, INVALID_REQUEST, _NOT_AN_OBJECT
    has_id, rid = "id" in message, message.get("id")
    echo = rid if _valid_id(rid) else None  # answer with the sender's id where it is one
    if "method" not in message:
        if has_id and ("result" in message or "error" in message):
            return None  # a client's answer to a server-to-client request
        return (
            echo,
            INVALID_REQUEST,
            "'method' is missing, and without 'result' or 'error' it is no response.",
        )
    if has_id and not _valid_id(rid):
        return None, INVALID_REQUEST, _BAD_ID
    if message.get("jsonrpc") != "2.0":
        return echo, INVALID_REQUEST, "'jsonrpc' must be \"2.0\"."
    if not isinstance(message["method"], str):
        return echo, INVALID_REQUEST, "'method' must be a string."
    params = message.get("params")
    if params is not None and not isinstance(params, dict):
        return echo, INVALID_REQUEST, "'params' must be an object."
    return None


def _valid_id(rid: object) -> bool:
    return isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))


def _parse_message(detail: str) -> str:
    for marker, hint in _PARSE_HINTS:
        if marker in detail:
            return f"Parse error: {hint} ({detail})."
    return f"Parse error: {detail}."


class McpEdge:
    """ASGI middleware in front of the SDK's Streamable HTTP app; only POSTs are looked at."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings, max_body_bytes: int) -> None:
        self.app = app
        self.security = TransportSecurityMiddleware(security)
        self.max_body_bytes = max_body_bytes
        self._in_flight: set[tuple[str, RequestId]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # Host, Origin and Content-Type first, as the SDK orders them, but answered in JSON-RPC.
        refused = await self.security.validate_request(Request(scope), is_post=True)
        if refused is not None:
            message = bytes(refused.body).decode(errors="replace")
            await _reply(send, refused.status_code, None, INVALID_REQUEST, message)
            return
        if self._declared_too_large(scope):
            await self._too_large(send)
            return
        body, trailing = await self._read_body(receive)
        if body is None:
            if trailing is None:
                await self._too_large(send)
            return  # the client went away mid-body: nobody to answer
        message, refusal = inspect_message(body)
        if refusal is not None:
            await _reply(send, 400, *refusal)
            return
        key = _session_request_key(scope, message)
        if key is None:
            await self.app(scope, _replay(body, receive), send)
            return
        if key in self._in_flight:
            await _reply(
                send, 400, None, INVALID_REQUEST, _ID_IN_FLIGHT.format(rid=json.dumps(message["id"]))
            )
            return
        self._in_flight.add(key)

        async def send_and_release(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._in_flight.discard(key)  # answered: the SDK may still be tidying up
            await send(message)

        try:
            await self.app(scope, _replay(body, receive), send_and_release)
        finally:
            self._in_flight.discard(key)

    def _declared_too_large(self, scope: Scope) -> bool:
        declared = Headers(scope=scope).get("content-length")
        return declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, Message | None]:
        """The whole body, or ``(None, None)`` past the limit, or ``(None, message)`` on a disconnect."""
        chunks = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, message
            chunks.extend(message.get("body", b""))
            if len(chunks) > self.max_body_bytes:
                return None, None
            if not message.get("more_body", False):
                return bytes(chunks), None

    async def _too_large(self, send: Send) -> None:
        err = PayloadTooLarge(
            f"The request body is over the gateway's limit of {self.max_body_bytes} bytes.",
            details={"limit_bytes": self.max_body_bytes},
        )
        data = {"error": err.payload(server=None, tool=None, request_id=new_request_id())}
        await _reply(send, 413, None, err.jsonrpc_code, err.message, data)


def _session_request_key(scope: Scope, message: dict[str, Any]) -> tuple[str, RequestId] | None:
    """(session, id) of a request inside a 2025-11-25 session; None for anything else."""
    if "id" not in message or "method" not in message:
        return None
    headers = Headers(scope=scope)
    session = headers.get(MCP_SESSION_ID_HEADER)
    version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
    if session is None or (version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS):
        return None  # 2026-07-28 requests share nothing, so their ids cannot collide
    return session, coerce_request_id(message["id"])


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the body already read to the app, then pass through (a disconnect, for instance)."""
    pending: deque[Message] = deque([{"type": "http.request", "body": body, "more_body": False}])

    async def replay() -> Message:
        return pending.popleft() if pending else await receive()

    return replay


async def _reply(send: Send, status: int, rid: Any, code: int, message: str, data: Any = None) -> None:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    body = json.dumps({"jsonrpc": "2.0", "id": rid, "error": error}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
