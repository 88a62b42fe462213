"""The immutable description of one tool call and the result it produced.

These types are transport-neutral on purpose: guards see plain data, never SDK session
objects, so a faster transport can replace the SDK's on the hot path without touching them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gateway.core.policy import DEFAULT_POLICY, ResolvedPolicy

SessionSource = Literal["session", "hint", "connection", "client"]
"""Where a ``Caller.session_key`` came from, strongest first: an MCP session (the 2025-11-25
handshake), a session hint the client sent, the transport connection, or the client alone."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the authenticated principal and the session the call belongs to."""

    principal: str
    """Client name from the API key table, or ``anonymous`` on loopback without keys."""
    session_key: str
    """Stable key for per-session state: the MCP session id, a session hint, the connection, or
    the principal (see ``session_source``)."""
    session_source: SessionSource = "session"
    """How much ``session_key`` says: a ``session`` or ``hint`` is one conversation; a
    ``connection`` is one client program for as long as it keeps its connection; ``client`` may be
    any number of agents of that principal (guards that count per agent must not add those up)."""
    client_name: str | None = None
    client_version: str | None = None
    protocol_version: str | None = None
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    """The client's declared capabilities, as sent on the wire (camelCase keys)."""
    log_level: str | None = None
    """The least severe ``notifications/message`` level the caller wants: a 2026-07-28 request's
    own ``_meta`` opt-in as sent, or a 2025-11-25 session's ``logging/setLevel`` (``debug`` until
    it sets one). ``None``: no log messages at all."""

    def can(self, capability: str) -> bool:
        return self.capabilities.get(capability) is not None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One ``tools/call`` as it travels the guard chain. A guard that changes it makes a new one."""

    server: str
    """Upstream server id from servers.toml."""
    tool: str
    """The tool's name on the upstream (not the namespaced name the agent used)."""
    exposed_name: str
    """The name the agent called: namespaced and possibly renamed."""
    arguments: Mapping[str, Any]
    caller: Caller
    request_id: str
    """The gateway's own id for this call, used for logs, audit and error correlation."""
    meta: Mapping[str, Any] | None = None
    """The request's ``_meta`` as the client sent it; forwarded to the upstream."""
    deadline: float | None = None
    """Monotonic time after which the call is abandoned; ``None`` uses the server's timeout."""
    attempt: int = 1
    annotations: Mapping[str, Any] = field(default_factory=dict)
    """The upstream tool's annotations (readOnlyHint, destructiveHint, ...)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Fields of the request params besides name/arguments/_meta (e.g. inputResponses,
    requestState in 2026-07-28), forwarded byte for byte."""
    policy: ResolvedPolicy = DEFAULT_POLICY
    """The policy this call runs under, set by the first step of the chain."""
    input_schema: Mapping[str, Any] | None = None
    output_schema: Mapping[str, Any] | None = None
    schema_version: str = ""
    """A digest of the tool definition: compiled validators are cached per tool version."""
    approval_reasons: tuple[str, ...] = ()
    """Why a guard wants a human to approve this call besides the policy's ``approval`` (e.g. a
    loop detected with ``loops.action = "approve"``); the approval gate asks if any is set."""

    def with_changes(self, **changes: Any) -> ToolCall:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A ``tools/call`` result in its wire form.

    The raw dict is kept as the upstream sent it so nothing the gateway does not understand is
    dropped (unknown fields, ``_meta``, ``input_required`` results with their ``requestState``).
    """

    raw: Mapping[str, Any]
    notes: tuple[str, ...] = ()
    """Decisions guards took without refusing (``invalid_output``, ``result_truncated``, ...),
    counted by the observer."""

    def noted(self, note: str) -> ToolResult:
        return ToolResult(self.raw, (*self.notes, note))

    @property
    def is_error(self) -> bool:
        return self.raw.get("isError") is True

    @property
    def input_required(self) -> bool:
        return self.raw.get("resultType") == "input_required"

    @property
    def structured(self) -> Any:
        return self.raw.get("structuredContent")

    @property
    def content(self) -> list[Mapping[str, Any]]:
        blocks = self.raw.get("content")
        return list(blocks) if isinstance(blocks, list) else []

    def text(self) -> str:
        """All text blocks joined; what a classifier or a human reads."""
        return "\n".join(str(b.get("text", "")) for b in self.content if b.get("type") == "text")

    @staticmethod
    def of_text(text: str, *, is_error: bool = False, structured: Any = None) -> ToolResult:
        raw: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
        if structured is not None:
            raw["structuredContent"] = structured
        if is_error:
            raw["isError"] = True
        return ToolResult(raw)

    @staticmethod
    def of_json(value: Any, *, is_error: bool = False) -> ToolResult:
        """A result whose text block and structuredContent carry the same JSON."""
        return ToolResult.of_text(
            json.dumps(value, separators=(",", ":"), default=str), is_error=is_error, structured=value
        )
