"""The pydantic models of ``policies/*.toml``.

Like ``models.py``: unknown keys are errors, models are frozen, units live in field names. In a
rule every setting defaults to ``None``, meaning "this rule does not touch it", so that a rule
changes only what it names (see ``docs/policies.md`` for how rules combine). CEL conditions are
kept here as source text; the loader compiles them, once, and reports errors at their key path.
"""

from __future__ import annotations

import re
from difflib import get_close_matches
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.config.models import (
    NAME_PATTERN,
    NOT_BOOL_FLOAT,
    NOT_BOOL_INT,
    TOOL_NAME_PATTERN,
    Loc,
    Name,
    NonEmpty,
    Seconds,
    problems_error,
)
from gateway.core.errors import ALL_ERRORS

ERROR_CODES: tuple[str, ...] = tuple(error.code for error in ALL_ERRORS)
"""Codes a hint can be given for: the gateway's closed set."""
PATTERN_CODES: tuple[str, ...] = tuple(
    error.code for error in ALL_ERRORS if error.plane == "tool" and error.code != "internal_error"
)
"""Codes an upstream ``isError`` text can be classified as: tool-plane codes, except the
gateway's own ``internal_error`` (an upstream's failure is never the gateway's)."""

Mode = Literal["off", "warn", "block"]
StoreFailure = Literal["open", "closed"]
PositiveInt = Annotated[int, Field(gt=0), NOT_BOOL_INT]
NonNegativeInt = Annotated[int, Field(ge=0), NOT_BOOL_INT]
Number = Annotated[float, Field(allow_inf_nan=False), NOT_BOOL_FLOAT]
RuleName = Annotated[str, Field(pattern=NAME_PATTERN)]
ToolName = Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
Glob = Annotated[str, Field(min_length=1)]
Globs = Annotated[list[Glob], Field(min_length=1)]
Rate = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False), NOT_BOOL_FLOAT]
"""A fraction of calls, in (0, 1]."""
Multiplier = Annotated[float, Field(ge=1, allow_inf_nan=False), NOT_BOOL_FLOAT]
Wait = Annotated[float, Field(ge=0, allow_inf_nan=False), NOT_BOOL_FLOAT]
"""Seconds that may be 0 (do not wait)."""
KeyPart = Literal["client", "session", "server", "tool"]

LoopAction = Literal["warn", "block", "approve"]


def _code_check(allowed: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value in allowed:
            return value
        guess = get_close_matches(value, allowed, n=1)
        suffix = f"; did you mean {guess[0]!r}?" if guess else ""
        raise PydanticCustomError(
            "interlock_error_code",
            "unknown error code {value} (expected one of: {codes}){suffix}",
            {"value": repr(value), "codes": ", ".join(allowed), "suffix": suffix},
        )

    return AfterValidator(check)


HintCode = Annotated[
    str, _code_check(ERROR_CODES), WithJsonSchema({"type": "string", "enum": list(ERROR_CODES)})
]
PatternCode = Annotated[
    str, _code_check(PATTERN_CODES), WithJsonSchema({"type": "string", "enum": list(PATTERN_CODES)})
]


def regex_problem(pattern: str) -> str | None:
    """Why a Python regular expression does not compile, or None."""
    try:
        re.compile(pattern)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        return f"invalid regular expression: {exc.msg}{where}"
    return None


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Table):
    """Which calls a rule applies to. Each list holds globs (``*``, ``?``, ``[...]``); a call must
    match every list that is present, and one glob of each. An empty ``match`` matches every call."""

    servers: Globs | None = None
    tools: Globs | None = None
    """Matched against the upstream tool name and against the exposed (namespaced) name."""
    clients: Globs | None = None
    """Client names from ``[[gateway.clients]]`` (``anonymous`` when no keys are configured)."""


class Retry(_Table):
    """Retry settings; a rule's table overrides only the keys it sets."""

    max_attempts: Annotated[int, Field(ge=1, le=20), NOT_BOOL_INT] | None = None
    base_delay_s: Seconds | None = None
    max_delay_s: Seconds | None = None
    max_retry_after_s: Annotated[float, Field(ge=0, allow_inf_nan=False), NOT_BOOL_FLOAT] | None = None
    budget_ratio: Annotated[float, Field(ge=0, le=1), NOT_BOOL_FLOAT] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        base, ceiling = self.base_delay_s, self.max_delay_s
        if base is not None and ceiling is not None and ceiling < base:
            raise problems_error([(("max_delay_s",), f"must be >= base_delay_s ({self.base_delay_s:g})")])
        return self


class Argument(_Table):
    """Operator constraints on one argument, checked on top of the tool's inputSchema."""

    pattern: NonEmpty | None = None
    """A Python regular expression the (string) value must match (``re.search``; anchor it)."""
    enum: Annotated[list[str | int | float | bool], Field(min_length=1)] | None = None
    minimum: Number | None = None
    maximum: Number | None = None
    min_length: NonNegativeInt | None = None
    max_length: NonNegativeInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[tuple[Loc, str]] = []
        if self.pattern is not None and (problem := regex_problem(self.pattern)):
            problems.append((("pattern",), problem))
        if self.minimum is not None and self.maximum is not None and self.maximum < self.minimum:
            problems.append((("maximum",), f"must be >= minimum ({self.minimum:g})"))
        shortest, longest = self.min_length, self.max_length
        if shortest is not None and longest is not None and longest < shortest:
            problems.append((("max_length",), f"must be >= min_length ({self.min_length})"))
        if problems:
            raise problems_error(problems)
        return self


class Reference(_Table):
    """An argument that must exist according to a lookup tool, called before the call itself."""

    argument: NonEmpty
    tool: ToolName
    """Exposed name of the lookup tool, e.g. ``crm__get_customer``."""
    arguments: dict[NonEmpty, NonEmpty] | None = None
    """Lookup arguments as CEL expressions; default ``{ <argument> = "args.<argument>" }``."""
    search_tool: ToolName | None = None
    ttl_s: Seconds = 300


class ErrorPatternTable(_Table):
    """An extra classifier of upstream ``isError`` results: text matching ``pattern`` gets ``code``."""

    code: PatternCode
    pattern: NonEmpty

    @model_validator(mode="after")
    def _compiles(self) -> Self:
        if problem := regex_problem(self.pattern):
            raise problems_error([(("pattern",), problem)])
        return self


class Breaker(_Table):
    """Circuit breaker settings; a rule's table overrides only the keys it sets."""

    enabled: bool | None = None
    per_tool: bool | None = None
    """Key the breaker on (server, tool) instead of the server alone."""
    window_size: PositiveInt | None = None
    """Outcomes kept in the sliding window (count based)."""
    minimum_calls: PositiveInt | None = None
    """No decision on rates before this many outcomes are in the window."""
    failure_rate: Rate | None = None
    slow_call_rate: Rate | None = None
    slow_call_s: Seconds | None = None
    half_open_calls: PositiveInt | None = None
    break_s: Seconds | None = None
    max_break_s: Seconds | None = None
    break_multiplier: Multiplier | None = None
    on_store_error: StoreFailure | None = None
    fallback: Literal["none", "cached", "tool"] | None = None
    fallback_tool: ToolName | None = None
    """Exposed name of the tool called instead while the circuit is open (``fallback = "tool"``)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[tuple[Loc, str]] = []
        window, minimum = self.window_size, self.minimum_calls
        if window is not None and minimum is not None and minimum > window:
            problems.append((("minimum_calls",), f"must be <= window_size ({window})"))
        first, longest = self.break_s, self.max_break_s
        if first is not None and longest is not None and longest < first:
            problems.append((("max_break_s",), f"must be >= break_s ({first:g})"))
        if self.fallback == "tool" and self.fallback_tool is None:
            problems.append(
                (("fallback_tool",), 'required with fallback = "tool" (the tool to call instead)')
            )
        if self.fallback_tool is not None and self.fallback not in (None, "tool"):
            problems.append(
                (("fallback_tool",), f'is used only with fallback = "tool", not {self.fallback!r}')
            )
        if problems:
            raise problems_error(problems)
        return self


class RateLimitTable(_Table):
    """One limit: ``limit`` calls per ``period_s`` (GCRA), counted per ``key``."""

    name: RuleName
    """Unique in a table; a later rule's limit of the same name replaces the earlier one."""
    limit: PositiveInt
    period_s: Seconds
    burst: PositiveInt | None = None
    """Calls admitted at once; default 1 (calls evenly spaced, one per ``period_s / limit``)."""
    key: Annotated[list[KeyPart], Field(min_length=1, json_schema_extra={"uniqueItems": True})] | None = None
    """What the limit counts per: any of client, session, server, tool; default ``["client"]``."""

    @model_validator(mode="after")
    def _unique_key(self) -> Self:
        parts = self.key or []
        problems: list[tuple[Loc, str]] = [
            (("key", index), f"{part!r} is already listed (key[{parts.index(part)}])")
            for index, part in enumerate(parts)
            if parts.index(part) != index
        ]
        if problems:
            raise problems_error(problems)
        return self


class Concurrency(_Table):
    """Calls in flight at once per upstream server; always replaced whole by a later rule."""

    max_in_flight: PositiveInt
    max_queue_wait_s: Wait | None = None
    """How long a call may wait for a slot before it is refused; default 5, 0 refuses at once."""


class Loops(_Table):
    """Loop detection settings; a rule's table overrides only the keys it sets."""

    enabled: bool | None = None
    action: LoopAction | None = None
    window_s: Seconds | None = None
    max_identical_calls: PositiveInt | None = None
    max_identical_results: PositiveInt | None = None
    max_failing_retries: PositiveInt | None = None
    max_cycle_repeats: PositiveInt | None = None
    max_calls_per_session: PositiveInt | None = None
    max_calls_per_tool_per_session: PositiveInt | None = None
    polling_min_interval_s: Seconds | None = None
    """Declares the tool a polling tool: calls sooner than this get rate_limited with the wait."""
    on_store_error: StoreFailure | None = None


class Approval(_Table):
    """A human must approve matching calls; replaced whole by a later rule's table."""

    required: bool = True
    """``false`` lifts an approval an earlier rule asked for."""
    when: NonEmpty | None = None
    """A CEL condition (same variables as a rule's ``when``); approval only when it is true."""
    timeout_s: Annotated[float, Field(gt=0, le=2_592_000, allow_inf_nan=False), NOT_BOOL_FLOAT] = 900
    approvers: Annotated[list[Name], Field(json_schema_extra={"uniqueItems": True})] = []
    """Admin names or groups from servers.toml [admin] who may decide; ``client``: the human at the
    agent's own MCP client (by elicitation). Empty: any admin, and the client."""
    mode: Literal["elicit", "hold", "defer"] = "elicit"
    """``elicit`` asks inside the agent's client when it declares elicitation, else ``fallback``;
    ``hold`` keeps the call waiting for a decision; ``defer`` answers approval_required at once."""
    fallback: Literal["hold", "defer"] = "defer"
    destructive_only: bool = False
    """Ask only for tools that may destroy (``destructiveHint``, with the MCP spec's defaults for
    absent hints, and not ``readOnlyHint``), and only where the policy trusts annotations
    (``trust_annotations``): an untrusted server's hints decide nothing."""
    reason: NonEmpty | None = None
    """Shown to the approver; default: the rule's name and its ``when``."""
    redact: list[NonEmpty] = []
    """Argument keys (substrings, case-insensitive) to redact in the record, besides the built-in
    password/token/secret/key/authorization/cookie/credential."""


class PolicyBody(_Table):
    """The settings of ``[defaults]`` and of every rule. ``None``: not set here."""

    access: Literal["allow", "deny"] | None = None
    idempotent: bool | None = None
    timeout_s: Seconds | None = None
    trust_annotations: bool | None = None
    validate_arguments: bool | None = None
    output_validation: Mode | None = None
    max_result_bytes: PositiveInt | None = None
    pinning: Mode | None = None
    retry: Retry | None = None
    reminder: NonEmpty | None = None
    reminder_every: PositiveInt | None = None
    hints: dict[HintCode, NonEmpty] = {}
    arguments: dict[NonEmpty, Argument] = {}
    references: list[Reference] = []
    error_patterns: list[ErrorPatternTable] = []
    breaker: Breaker | None = None
    rate_limits: list[RateLimitTable] = []
    rate_limit_on_store_error: StoreFailure | None = None
    concurrency: Concurrency | None = None
    """Per upstream server, whichever tool the rule matches."""
    loops: Loops | None = None
    approval: Approval | None = None

    @model_validator(mode="after")
    def _unique_limit_names(self) -> Self:
        first: dict[str, int] = {}
        problems: list[tuple[Loc, str]] = []
        for index, limit in enumerate(self.rate_limits):
            if limit.name in first:
                where = f"rate_limits[{first[limit.name]}]"
                problems.append(
                    (
                        ("rate_limits", index, "name"),
                        f"duplicate rate limit name {limit.name!r} (first in {where})",
                    )
                )
            first.setdefault(limit.name, index)
        if problems:
            raise problems_error(problems)
        return self


class _RuleHead(_Table):
    name: RuleName
    """Unique across all policy files; shown by ``policy explain``, in audit records and metrics."""
    match: Match = Match()
    when: NonEmpty | None = None
    """A CEL condition over server, tool, exposed, args, client, session and annotations."""


class Rule(PolicyBody, _RuleHead):
    """One ``[[rules]]`` entry: which calls (``match``, ``when``) and what it sets for them."""


class PolicyFile(_Table):
    """One file of the policies folder."""

    defaults: PolicyBody | None = None
    rules: list[Rule] = []
