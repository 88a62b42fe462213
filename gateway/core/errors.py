"""The closed set of errors the gateway speaks.

Every class declares a stable ``code``, the ``plane`` it travels on (``tool``: an ``isError`` result
the model reads and can correct itself from; ``protocol``: a JSON-RPC error), whether it is
``retryable``, and the default ``hint`` that tells an agent what to do next. A test checks that
every code is unique and renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

Plane = Literal["tool", "protocol"]

# JSON-RPC codes used on the protocol plane.
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

UPSTREAM = "upstream"
"""The ``guard`` of an error no guard raised: the upstream failed (or said it failed)."""


class GatewayError(Exception):
    code: ClassVar[str] = "internal_error"
    plane: ClassVar[Plane] = "tool"
    retryable: ClassVar[bool] = False
    jsonrpc_code: ClassVar[int] = INTERNAL_ERROR
    default_hint: ClassVar[str] = (
        "The gateway failed unexpectedly. Report the failure with its request_id; do not invent a result."
    )

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        retry_after_s: float | None = None,
        details: Mapping[str, Any] | None = None,
        guard: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.retry_after_s = retry_after_s
        self.details: dict[str, Any] = dict(details or {})
        self.extra_content: list[dict[str, Any]] = []
        """Content blocks rendered after the error's own (e.g. reminders)."""
        self.guard = guard
        """Who raised it: a guard's name (set by the chain as the error leaves that guard), or
        ``UPSTREAM`` when it reports the upstream's failure. ``None``: not raised inside a chain."""

    @property
    def refused_by(self) -> str | None:
        """The guard that refused the call, or None when it is the upstream's failure."""
        return None if self.guard in (None, UPSTREAM) else self.guard

    def payload(self, *, server: str | None, tool: str | None, request_id: str | None) -> dict[str, Any]:
        """The one error shape agents see, on either plane."""
        details = self.details
        if self.refused_by is not None:
            details = {**details, "guard": self.refused_by}
        return {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "retry_after_s": self.retry_after_s,
            "hint": self.hint,
            "details": details,
            "server": server,
            "tool": tool,
            "request_id": request_id,
        }


class InternalError(GatewayError):
    @property
    def refused_by(self) -> str | None:
        return None  # a bug, not a refusal: the log has where it happened


class UnknownTool(GatewayError):
    """The spec makes an unknown tool name a protocol error (-32602)."""

    code = "unknown_tool"
    plane = "protocol"
    jsonrpc_code = INVALID_PARAMS
    default_hint = "Call tools/list and use one of the listed names exactly."


class InvalidArguments(GatewayError):
    code = "invalid_arguments"
    default_hint = (
        "Change the arguments named in details.violations (or in the message) and call again; "
        "do not guess values."
    )


class InvalidOutput(GatewayError):
    code = "invalid_output"
    default_hint = "The tool returned data that does not match its declared output; do not rely on it."


class Forbidden(GatewayError):
    code = "forbidden"
    default_hint = "This call is not allowed for this client. Do not retry; ask a human if it is needed."


class Unauthorized(GatewayError):
    code = "unauthorized"
    default_hint = (
        "Do not ask the user for a password; the gateway's credentials for this server need attention. "
        "Report it to an operator."
    )


class NotFound(GatewayError):
    code = "not_found"
    default_hint = "The item does not exist. Look it up with a search tool instead of guessing identifiers."


class Conflict(GatewayError):
    code = "conflict"
    default_hint = "The target changed or already exists. Re-read its current state before trying again."


class RateLimited(GatewayError):
    code = "rate_limited"
    retryable = True
    default_hint = "Wait retry_after_s seconds before calling again; the gateway is limiting this client."


class StateUnavailable(GatewayError):
    """A guard could not read or write the gateway's state store (Redis down, SQLite locked) and its
    policy fails closed. Not the tool's fault and not a limit the agent reached."""

    code = "state_unavailable"
    retryable = True
    default_hint = (
        "The gateway could not check this call because its state store is unreachable; the call did "
        "not run. Wait retry_after_s seconds and call again. Do not report the tool as broken and do "
        "not invent a result."
    )


class LoopDetected(GatewayError):
    """The session repeats itself without progress: identical calls, stuck polling, failing retries,
    cycles. ``details`` carries the evidence (kind, calls, count, span_s, window_s)."""

    code = "loop_detected"
    default_hint = (
        "You are repeating the same call without progress. Stop, change your approach, or ask the user."
    )


class CallBudgetExceeded(GatewayError):
    """The session has made as many calls (in all, or to one tool) as the policy allows."""

    code = "call_budget_exceeded"
    default_hint = (
        "This session has used its call budget. Do not retry; finish with what you have, "
        "or ask the user whether to continue."
    )


class ApprovalRequired(GatewayError):
    """The call needs a human's approval, asked for out of band (defer mode). ``details``: the
    ``approval_id``, ``decide_url``, ``expires_at`` and ``rule``."""

    code = "approval_required"
    retryable = True
    default_hint = (
        "A human must approve this call first; it has not run. Tell the user it awaits approval "
        "(details.decide_url), then call the same tool with exactly the same arguments once it is "
        "approved. Do not work around it with another tool."
    )


class ApprovalDenied(GatewayError):
    """A human denied the call (``details``: approval_id, decided_by, comment)."""

    code = "approval_denied"
    default_hint = (
        "A human denied this call; it did not run. Do not retry it or work around it; "
        "tell the user, including the approver's comment if there is one."
    )


class ApprovalExpired(GatewayError):
    """Nobody decided in time; an undecided request counts as denied."""

    code = "approval_expired"
    default_hint = (
        "Nobody approved this call in time, so it did not run. Ask the user whether to request "
        "approval again before repeating it."
    )


class CircuitOpen(GatewayError):
    code = "circuit_open"
    retryable = True
    default_hint = (
        "The service behind this tool is failing; the gateway stopped calling it for retry_after_s "
        "seconds. Do not retry before then; use another tool or tell the user it is temporarily "
        "unavailable. Do not invent a result."
    )


class UpstreamRateLimited(GatewayError):
    code = "upstream_rate_limited"
    retryable = True
    default_hint = (
        "Wait retry_after_s seconds (a few seconds if it is null), then retry; the service is not down, "
        "it is asking you to slow down. Do not report it as down."
    )


class UpstreamUnavailable(GatewayError):
    code = "upstream_unavailable"
    retryable = True
    default_hint = (
        "The server behind this tool is not reachable right now. Try again later or use another tool; "
        "do not invent a result."
    )


class UpstreamTimeout(GatewayError):
    code = "upstream_timeout"
    retryable = True
    default_hint = (
        "The tool did not answer in time. Retry later or ask for less work; do not invent a result."
    )


class UpstreamError(GatewayError):
    code = "upstream_error"
    default_hint = (
        "The tool failed on the server side. Report the failure; do not invent a result. "
        "Retrying the same call is unlikely to help."
    )


class OutcomeUnknown(GatewayError):
    code = "outcome_unknown"
    default_hint = (
        "The call may or may not have taken effect. Check the current state before trying again; "
        "do not assume it failed."
    )


class PayloadTooLarge(GatewayError):
    code = "payload_too_large"
    plane = "protocol"
    jsonrpc_code = INVALID_PARAMS
    default_hint = "Send a smaller request."


ALL_ERRORS: tuple[type[GatewayError], ...] = (
    InternalError,
    UnknownTool,
    InvalidArguments,
    InvalidOutput,
    Forbidden,
    Unauthorized,
    NotFound,
    Conflict,
    RateLimited,
    StateUnavailable,
    LoopDetected,
    CallBudgetExceeded,
    ApprovalRequired,
    ApprovalDenied,
    ApprovalExpired,
    CircuitOpen,
    UpstreamRateLimited,
    UpstreamUnavailable,
    UpstreamTimeout,
    UpstreamError,
    OutcomeUnknown,
    PayloadTooLarge,
)

BY_CODE: Mapping[str, type[GatewayError]] = {cls.code: cls for cls in ALL_ERRORS}
"""Error classes by their stable code: how policy (hints, error patterns) names them."""
