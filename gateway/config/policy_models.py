"""The shape of ``policies/*.toml``: the parts every file shares, and the file model built from units.

Like ``models.py``: unknown keys are errors, models are frozen, units live in field names. The
settings a rule may carry are not listed here: each guard declares its own keys (a
``gateway.config.units.Unit``), and ``policy_file_model`` builds ``[defaults]``, ``[[rules]]`` and
the file from the units it is given. In a body every setting defaults to ``None``, meaning "this
rule does not touch it", so that a rule changes only what it names (see ``docs/policies.md``).
CEL conditions are compiled while the file is validated, so a bad one is reported at its key path
together with every other problem.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import get_close_matches
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

from gateway.config.cel import CelError, Expression, compile_expression
from gateway.config.models import NAME_PATTERN, NOT_BOOL_FLOAT, NOT_BOOL_INT
from gateway.config.units import Key, PolicyTable, Unit

PositiveInt = Annotated[int, Field(gt=0), NOT_BOOL_INT]
NonNegativeInt = Annotated[int, Field(ge=0), NOT_BOOL_INT]
Number = Annotated[float, Field(allow_inf_nan=False), NOT_BOOL_FLOAT]
RuleName = Annotated[str, Field(pattern=NAME_PATTERN)]
Glob = Annotated[str, Field(min_length=1)]
Globs = Annotated[list[Glob], Field(min_length=1)]
Rate = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False), NOT_BOOL_FLOAT]
"""A fraction of calls, in (0, 1]."""
Multiplier = Annotated[float, Field(ge=1, allow_inf_nan=False), NOT_BOOL_FLOAT]
Wait = Annotated[float, Field(ge=0, allow_inf_nan=False), NOT_BOOL_FLOAT]
"""Seconds that may be 0 (do not wait)."""


@lru_cache(maxsize=4096)
def cel(source: str) -> Expression:
    """Compile once per distinct source: validation and every reload reuse the same program."""
    return compile_expression(source)


def _cel_value(value: Any) -> Expression:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "interlock_cel", "expected a CEL expression (a string), got {given}", {"given": repr(value)}
        )
    if not value:
        raise PydanticCustomError("interlock_cel", "expected a CEL expression, got an empty string")
    try:
        return cel(value)
    except CelError as exc:
        raise PydanticCustomError("interlock_cel", "{message}", {"message": str(exc)}) from None


Cel = Annotated[
    Expression,
    PlainValidator(_cel_value),
    PlainSerializer(lambda expression: expression.source),
    WithJsonSchema({"type": "string", "minLength": 1, "description": "A CEL expression."}),
]
"""A CEL condition or value, compiled at load; a source that does not compile is a load error."""


def code_check(allowed: tuple[str, ...]) -> AfterValidator:
    """An error code of ``allowed``, with a "did you mean" for a near miss."""

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


def code_type(allowed: tuple[str, ...]) -> Any:
    return Annotated[str, code_check(allowed), WithJsonSchema({"type": "string", "enum": list(allowed)})]


def regex_problem(pattern: str) -> str | None:
    """Why a Python regular expression does not compile, or None."""
    try:
        re.compile(pattern)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        return f"invalid regular expression: {exc.msg}{where}"
    return None


class Match(PolicyTable):
    """Which calls a rule applies to. Each list holds globs (``*``, ``?``, ``[...]``); a call must
    match every list that is present, and one glob of each. An empty ``match`` matches every call."""

    servers: Globs | None = None
    tools: Globs | None = None
    """Matched against the upstream tool name and against the exposed (namespaced) name."""
    clients: Globs | None = None
    """Client names from ``[[gateway.clients]]`` (``anonymous`` when no keys are configured)."""


class RuleHead(PolicyTable):
    name: RuleName
    """Unique across all policy files; shown by ``policy explain``, on approval records and in logs."""
    match: Match = Match()
    when: Cel | None = None
    """A CEL condition over server, tool, exposed, args, client, session and annotations."""


class PolicyModels:
    """The pydantic models of one policy file, for a given list of units."""

    def __init__(self, units: Sequence[Unit[Any]]) -> None:
        fields: dict[str, Any] = {}
        self.keys: dict[str, Key] = {}
        """Every policy key of a body, with its spec."""
        for unit in units:
            for name, key in unit.keys.items():
                if name in self.keys or name in RuleHead.model_fields:
                    raise ValueError(f"policy key {name!r} of unit {unit.name!r} is already taken")
                self.keys[name] = key
                fields[name] = (key.type | None, Field(default=None, description=key.description))
        self.body: type[PolicyTable] = create_model(  # type: ignore[call-overload]
            "PolicyBody",
            __base__=PolicyTable,
            __doc__="The settings of [defaults] and of every rule. Not set: the value before it holds.",
            **dict(sorted(fields.items())),  # by name: how "unknown key (allowed: ...)" lists them
        )
        self.rule: type[PolicyTable] = create_model(
            "Rule",
            __base__=(self.body, RuleHead),
            __doc__="One [[rules]] entry: which calls (match, when) and what it sets for them.",
        )
        self.file: type[BaseModel] = create_model(  # type: ignore[call-overload]
            "PolicyFile",
            __base__=PolicyTable,
            __doc__="One file of the policies folder.",
            defaults=(self.body | None, None),  # type: ignore[arg-type]
            rules=(list[self.rule], []),  # type: ignore[name-defined]
        )
