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

    def is_idempotent(self, annotations: Mapping[str, Any]) -> bool:
        """Whether retrying is safe: policy says so, or trusted annotations do."""
        if self.idempotent is not None:
            return self.idempotent
        if not self.trust_annotations:
            return False
        return bool(annotations.get("readOnlyHint") or annotations.get("idempotentHint"))


DEFAULT_POLICY = ResolvedPolicy()
