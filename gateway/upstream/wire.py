"""What an upstream really sent, read between its transport and the SDK's dispatcher.

The dispatcher raises the same ``MCPError`` for an error the upstream sent and for its own
verdicts (connection closed: -32000, request timed out: -32001), and any server may send those
codes for its own failures. The code cannot tell them apart; the wire can. ``WireWatch`` wraps the
transport's read stream and notes, for each request the gateway waits on, whether an error
response for it arrived. An ``MCPError`` with no such response is the SDK's own.

It also answers responses the SDK cannot read. A transport hands the dispatcher a validation error
in place of a message whose result is not an object, whose error code is not an integer or whose
error has no message; the dispatcher drops it, and the caller would wait out its whole timeout.
When the unreadable message is a response to a known id, the watch passes on an error response
for that id instead, so the waiting request fails at once, and notes why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from mcp.shared._stream_protocols import ReadStream
from mcp.shared.dispatcher import as_request_id, coerce_request_id
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCError, RequestId
from pydantic import ValidationError

log = logging.getLogger("interlock.upstream")

Item = SessionMessage | Exception

# Errors the SDK's HTTP transport puts on the read stream itself (mcp.client.streamable_http),
# recognised by their text. A broken response stream is a transport failure (the connection is
# marked down); a body it could not parse, a 202 or a wrong content type answering a request is the
# upstream answering wrongly. Either way the words are the SDK's, not the upstream's.
_HTTP_LOSSES = ("SSE stream ended without a response", "SSE stream failed: ")
_HTTP_BAD_ANSWERS = {  # the SDK's words -> ours (None: the SDK's are clear enough)
    "Failed to parse JSON response: ": "its HTTP response body is not a valid JSON-RPC response",
    "Failed to parse SSE message: ": "an SSE event on its response stream is not a valid JSON-RPC message",
    "server answered a request with 202 Accepted": "it answered with 202 Accepted and no response",
    "Unexpected content type: ": None,
}


@dataclass(frozen=True, slots=True)
class Malformed:
    """The upstream answered a request with something that is not a JSON-RPC response."""

    fault: str


@dataclass(frozen=True, slots=True)
class PeerError:
    """The upstream answered a request with this JSON-RPC error."""

    error: ErrorData

    def raised_as(self, exc: MCPError) -> bool:
        """Whether ``exc`` is this answer. An SDK timeout can race an error that arrives late;
        the error the dispatcher raised is then its own, not the one on the wire."""
        return (exc.error.code, exc.error.message) == (self.error.code, self.error.message)


Verdict = PeerError | Malformed
"""What arrived for a request that failed: the upstream's own error, or an unreadable answer.
No verdict means no answer arrived: the error is the SDK's (closed, timed out)."""


@dataclass
class WireLog:
    """Per-request verdicts, kept only for the requests the gateway is waiting on."""

    http: bool = False
    waiting: set[RequestId] = field(default_factory=set)
    verdicts: dict[RequestId, Verdict] = field(default_factory=dict)

    def expect(self, request_id: RequestId) -> None:
        self.waiting.add(coerce_request_id(request_id))

    def settle(self, request_id: RequestId) -> Verdict | None:
        """Forget the request; what arrived for it, if it failed."""
        key = coerce_request_id(request_id)
        self.waiting.discard(key)
        return self.verdicts.pop(key, None)

    def note(self, request_id: RequestId, verdict: Verdict) -> None:
        key = coerce_request_id(request_id)
        if key in self.waiting:
            self.verdicts[key] = verdict


class WireWatch:
    """The transport's read stream, as the dispatcher reads it, with every item inspected."""

    def __init__(self, inner: ReadStream[Item], wire: WireLog, server: str) -> None:
        self._inner = inner
        self._wire = wire
        self._server = server

    @property
    def last_context(self) -> Any:
        # The dispatcher runs each message in the sender's context when the stream carries one
        # (the HTTP transport's does); the wrapper must not hide it.
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Item:
        return self._inspect(await self._inner.receive())

    def _inspect(self, item: Item) -> Item:
        if isinstance(item, SessionMessage):
            message = item.message
            if isinstance(message, JSONRPCError) and message.id is not None:
                verdict = self._error_verdict(message.error)
                if verdict is not None:
                    self._wire.note(message.id, verdict)
            return item
        if isinstance(item, ValidationError):
            return self._answer_unreadable(item) or item
        return item

    def _error_verdict(self, error: ErrorData) -> Verdict | None:
        if not self._wire.http:
            return PeerError(error)  # a stdio transport adds nothing of its own to the stream
        if error.message.startswith(_HTTP_LOSSES):
            return None
        for prefix, fault in _HTTP_BAD_ANSWERS.items():
            if error.message.startswith(prefix):
                return Malformed(fault or error.message[:200])
        return PeerError(error)

    def _answer_unreadable(self, exc: ValidationError) -> Item | None:
        response = _response_in(exc)
        if response is None:
            return None
        request_id = as_request_id(response.get("id"))
        if request_id is None:
            return None  # nothing to correlate it with: dropped like any other garbage
        fault = _fault(response) or f"the SDK could not read it: {exc.errors()[0]['msg'][:200]}"
        log.warning(
            "%s: the answer to request %r is not valid JSON-RPC (%s)", self._server, request_id, fault
        )
        self._wire.note(request_id, Malformed(fault))
        error = ErrorData(code=INTERNAL_ERROR, message=f"malformed response from the upstream: {fault}")
        return SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error))

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Item:
        return self._inspect(await self._inner.__anext__())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


def _response_in(exc: ValidationError) -> Mapping[str, Any] | None:
    """The message a validation error was about, if it is shaped like a response.

    Pydantic reports each failed field with the object that held it, so the message itself appears
    among the inputs (a missing ``method`` is reported against it). Only the message carries an
    ``id`` next to a ``result`` or an ``error`` and no ``method``.
    """
    for error in exc.errors(include_url=False):
        candidate = error.get("input")
        if error["type"] == "json_invalid" and isinstance(candidate, str):
            candidate = _lenient_parse(candidate)
        if (
            isinstance(candidate, Mapping)
            and "id" in candidate
            and "method" not in candidate
            and ("result" in candidate or "error" in candidate)
        ):
            return candidate
    return None


def _lenient_parse(line: str) -> object:
    """A line the SDK's parser refused as JSON (e.g. nested past its depth limit), parsed by the
    standard library, which goes deeper. Garbage stays garbage."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def _fault(response: Mapping[str, Any]) -> str | None:
    """What is wrong with a response the SDK refused, in words for a log line and an agent."""
    if "error" in response:
        error = response["error"]
        if not isinstance(error, Mapping):
            return f"its error is {_kind(error)}, not an object"
        code, message = error.get("code"), error.get("message")
        if not isinstance(code, int) or isinstance(code, bool):
            return f"its error code is {_kind(code)}, not an integer"
        if "message" not in error:
            return "its error has no message"
        if not isinstance(message, str):
            return f"its error message is {_kind(message)}, not a string"
        return None
    result = response.get("result")
    if not isinstance(result, Mapping):
        return f"its result is {_kind(result)}, not an object"
    return None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
