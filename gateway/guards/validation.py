"""Argument validation: the tool's inputSchema and the operator's constraints, before the upstream.

The compiled validators live in ``gateway.guards.schemas``, shared with output validation, with
the bounds on what an upstream's schema may cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Self

from pydantic import Field, model_validator

from gateway.config.models import Loc, NonEmpty, problems_error
from gateway.config.policy_models import NonNegativeInt, Number, regex_problem
from gateway.config.units import ExplainView, Key, PolicyTable, Rows, Unit, json_text, merged_deep
from gateway.core import CallNext, ToolCall, ToolResult
from gateway.core.errors import InvalidArguments
from gateway.guards.schemas import EMPTY, MAX_VIOLATIONS, ArgumentConstraint, Kind, SchemaCache
from gateway.guards.stage import GuardDeps, Stage
from gateway.guards.violations import fix_hint, violations_from


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    enabled: bool = True
    """``validate_arguments``: check the upstream's inputSchema (the operator's constraints always)."""
    constraints: Mapping[str, ArgumentConstraint] = field(default_factory=lambda: MappingProxyType({}))


class ArgumentTable(PolicyTable):
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


def _settings(values: Mapping[str, Any]) -> ValidationSettings:
    constraints = {name: ArgumentConstraint(**keys) for name, keys in values.get("arguments", {}).items()}
    return ValidationSettings(values.get("validate_arguments", True), MappingProxyType(constraints))


def _rows(settings: ValidationSettings, view: ExplainView) -> Rows:
    rows = [("validate_arguments", "true" if settings.enabled else "false")]
    for name, constraint in settings.constraints.items():
        shown = " ".join(
            f"{key}={json_text(value)}"
            for key in ArgumentConstraint.__slots__
            if (value := getattr(constraint, key)) is not None
        )
        rows.append((f"arguments.{name}", shown))
    return rows


VALIDATION: Unit[ValidationSettings] = Unit(
    name="argument_validation",
    default=ValidationSettings(),
    keys={
        "validate_arguments": Key(bool, "Check arguments against the tool's inputSchema."),
        "arguments": Key(
            dict[NonEmpty, ArgumentTable],
            "Operator constraints per argument (merged argument by argument, key by key).",
            combine=merged_deep,
        ),
    },
    build=_settings,
    rows=_rows,
)


def shared_schemas(deps: GuardDeps) -> SchemaCache:
    """One compiled-validator cache for arguments and outputs."""
    cache: SchemaCache = deps.shared.setdefault("schemas", SchemaCache())
    return cache


class ArgumentValidation:
    """Refuses a call whose arguments break the tool's inputSchema or the operator's constraints.

    Refuses with ``invalid_arguments`` listing every violation (pointer, expected, given, allowed,
    did_you_mean). Keys its compiled validators on (server, tool, schema_version, constraints), so
    the hot path is one cache lookup and one ``is_valid``. It stands after access, loop detection
    and rate limiting (a refused or throttled call costs no validation; repeated invalid calls are
    loops too) and before reference checks and approval: a human never approves an invalid call,
    and the upstream never sees one. ``validate_arguments = false`` turns off the upstream schema
    only; the operator's own constraints still apply.
    """

    def __init__(self, schemas: SchemaCache | None = None, *, max_violations: int = MAX_VIOLATIONS) -> None:
        self.schemas = schemas if schemas is not None else SchemaCache()
        self._max_violations = max_violations

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        settings = call.policy.of(VALIDATION)
        schema = call.input_schema if settings.enabled else None
        constraints = settings.constraints
        if schema is None and not constraints:
            return await call_next(call)
        kind: Kind = "input" if schema is not None else "constraints"
        entry = self.schemas.get(kind, call, schema if schema is not None else EMPTY, constraints)
        args = call.arguments if type(call.arguments) is dict else dict(call.arguments)
        errors = self.schemas.errors(entry, args, self._max_violations, kind, call)
        if errors:
            raise self._refusal(call, errors)
        result = await call_next(call)
        if errors is None or entry.skip_reason is not None:
            return result.noted("schema_skipped")
        return result

    def _refusal(self, call: ToolCall, errors: list[Any]) -> InvalidArguments:
        violations = violations_from(errors, self._max_violations)
        capped = len(violations) >= self._max_violations
        count = f"at least {len(violations)}" if capped else str(len(violations))
        noun = "violation" if len(violations) == 1 else "violations"
        return InvalidArguments(
            f"The arguments of {call.exposed_name} are invalid: {count} {noun}.",
            hint=fix_hint(violations),
            details={"violations": violations},
        )


def _build(deps: GuardDeps) -> ArgumentValidation:
    return ArgumentValidation(shared_schemas(deps))


STAGE = Stage("argument_validation", _build, VALIDATION)
