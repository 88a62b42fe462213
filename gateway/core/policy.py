"""The policy a single call runs under, after every matching rule has been applied.

Pure data, resolved once per call by the policy layer (``gateway.config.policy``) and carried on
the ``ToolCall``; guards read it and never parse policy files themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["off", "warn", "block"]

Evaluator = Callable[[Mapping[str, Any]], Any]
"""A compiled expression: takes the activation (``args``, ``client``, ``server``, ``tool``,
``session``, ``annotations``) and returns a value."""


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_attempts: int = 3
    """Attempts in all, the first included; 1 disables retries."""
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    max_retry_after_s: float = 30.0
    """An upstream's Retry-After is honoured up to this; longer waits are the agent's to take."""
    budget_ratio: float = 0.2
    """Retries per upstream may add at most this fraction of its recent calls (plus a small floor)."""


@dataclass(frozen=True, slots=True)
class ArgumentConstraint:
    """Operator constraints on one argument, checked on top of the upstream's inputSchema."""

    pattern: str | None = None
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class ReferenceCheck:
    """An argument that must exist according to a lookup tool, e.g. an id before a write."""

    argument: str
    """Name of the checked argument (top level)."""
    tool: str
    """Exposed name of the lookup tool, e.g. ``crm__get_customer``."""
    arguments: Mapping[str, Evaluator]
    """Lookup arguments: name -> compiled CEL expression over the call (``args``, ``client``, ...)."""
    source: Mapping[str, str] = field(default_factory=dict)
    """The expressions as written, for ``policy explain`` and error details."""
    search_tool: str | None = None
    """Named in the hint when the reference does not exist."""
    ttl_s: float = 300.0


@dataclass(frozen=True, slots=True)
class ErrorPattern:
    """Classifies an upstream ``isError`` result by its text."""

    code: str
    pattern: re.Pattern[str]


StoreFailure = Literal["open", "closed"]
"""When the shared state store cannot be reached: let calls through, or refuse them."""


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """A circuit breaker with the semantics of the mature ones (sliding window, rates, trials)."""

    enabled: bool = True
    per_tool: bool = False
    """Key the breaker on (server, tool) instead of the server alone."""
    window_size: int = 20
    """Outcomes kept in the sliding window (count based)."""
    minimum_calls: int = 10
    """No decision on rates before this many outcomes are in the window."""
    failure_rate: float = 0.5
    """Open when failures / calls in the window reach this."""
    slow_call_rate: float = 1.0
    """Open when slow calls / calls reach this (1.0 disables it in practice)."""
    slow_call_s: float = 10.0
    half_open_calls: int = 3
    """Exactly this many trial calls in half-open; the others fail fast."""
    break_s: float = 10.0
    """The first open period; it grows while the upstream keeps failing."""
    max_break_s: float = 300.0
    break_multiplier: float = 2.0
    on_store_error: StoreFailure = "open"
    fallback: Literal["none", "cached", "tool"] = "none"
    """While open: serve the last good result (read-only tools only), or call ``fallback_tool``."""
    fallback_tool: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A GCRA limit: ``limit`` calls per ``period_s``, with ``burst`` calls allowed at once."""

    name: str
    limit: int
    period_s: float
    burst: int = 1
    key: tuple[str, ...] = ("client",)
    """What the limit counts per: any of client, session, server, tool."""


@dataclass(frozen=True, slots=True)
class LoopSettings:
    enabled: bool = True
    action: Literal["warn", "block", "approve"] = "block"
    """``approve``: a detected loop needs a human's approval to go on (the rule's ``approval``
    settings, or the defaults, say how to ask)."""
    window_s: float = 600.0
    max_identical_calls: int = 10
    """The same call (tool + canonical arguments) this many times in the window is a loop."""
    max_identical_results: int = 5
    """The same call getting the same result this many times in a row is stuck polling."""
    max_failing_retries: int = 3
    """The same failing call retried unchanged this many times."""
    max_cycle_repeats: int = 3
    """A cycle (A-B-A-B, A-B-C-A-B-C) repeated this many times."""
    max_calls_per_session: int | None = 500
    max_calls_per_tool_per_session: int | None = 200
    polling_min_interval_s: float | None = None
    """Declares the tool a polling tool: calls sooner than this get rate_limited with the exact wait."""
    on_store_error: StoreFailure = "open"


ApprovalMode = Literal["elicit", "hold", "defer"]


@dataclass(frozen=True, slots=True)
class ApprovalRequirement:
    """A human must approve the call before it runs (when ``when`` holds, or always)."""

    rule: str
    """The rule that asked; recorded on the approval and shown to the approver."""
    when: Evaluator | None = None
    when_source: str | None = None
    timeout_s: float = 900.0
    """How long the request may wait for a decision; undecided by then means denied (expired)."""
    approvers: tuple[str, ...] = ()
    """Admin names or groups who may decide; ``client`` is the human at the agent's own client.
    Empty: anyone with the admin token, and the agent's client."""
    mode: ApprovalMode = "elicit"
    """``elicit``: ask in the agent's own client when it can answer, else ``fallback``."""
    fallback: Literal["hold", "defer"] = "defer"
    destructive_only: bool = False
    """Only tools whose trusted annotations say they may destroy (see the policy key)."""
    reason: str | None = None
    redact: tuple[str, ...] = ()
    """Argument keys (substrings, case-insensitive) redacted in the record besides the built-in ones."""

    def client_may_decide(self) -> bool:
        return not self.approvers or "client" in self.approvers


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    max_in_flight: int
    max_queue_wait_s: float = 5.0


@dataclass(frozen=True, slots=True)
class ResolvedPolicy:
    rules: tuple[str, ...] = ()
    """Names of the rules that matched, in order applied (for explain and audit)."""
    access: Literal["allow", "deny"] = "allow"
    timeout_s: float | None = None
    idempotent: bool | None = None
    """Set by policy; ``None`` defers to the tool's annotations when they are trusted."""
    trust_annotations: bool = False
    validate_arguments: bool = True
    output_validation: Mode = "warn"
    max_result_bytes: int | None = None
    argument_constraints: Mapping[str, ArgumentConstraint] = field(default_factory=dict)
    references: tuple[ReferenceCheck, ...] = ()
    retry: RetrySettings = RetrySettings()
    hints: Mapping[str, str] = field(default_factory=dict)
    """Hint overrides by error code."""
    error_patterns: tuple[ErrorPattern, ...] = ()
    reminders: tuple[str, ...] = ()
    reminder_every: int = 1
    """Re-inject reminders on every Nth matching call of a session (1 = every call)."""
    pinning: Mode = "warn"
    breaker: BreakerSettings = BreakerSettings()
    rate_limits: tuple[RateLimit, ...] = ()
    rate_limit_on_store_error: StoreFailure = "open"
    concurrency: ConcurrencyLimit | None = None
    """Per upstream server: calls in flight at once, and how long a call may wait for a slot."""
    loops: LoopSettings = LoopSettings()
    approval: ApprovalRequirement | None = None

    def is_idempotent(self, annotations: Mapping[str, Any]) -> bool:
        """Whether retrying is safe: policy says so, or trusted annotations do."""
        if self.idempotent is not None:
            return self.idempotent
        if not self.trust_annotations:
            return False
        return bool(annotations.get("readOnlyHint") or annotations.get("idempotentHint"))


DEFAULT_POLICY = ResolvedPolicy()
