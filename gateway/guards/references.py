"""Reference checks: an argument must name something that exists, according to a lookup tool."""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.config.models import NonEmpty, Seconds, ToolName
from gateway.config.policy_models import Cel, cel
from gateway.config.units import ExplainView, Key, PolicyTable, Rows, Unit, appended
from gateway.core import CallNext, Clock, GatewayError, ToolCall, ToolResult
from gateway.core.errors import InvalidArguments, NotFound
from gateway.core.policy import Evaluator
from gateway.guards.stage import GuardDeps, LookupRunner, Stage
from gateway.guards.violations import given_value

log = logging.getLogger("interlock.guards.references")

MAX_CACHE_ENTRIES = 10_000
MAX_LOOKUP_DEPTH = 2
"""A lookup may itself have reference checks; past this depth they are skipped (no cycles)."""

NOT_FOUND_TEXT = re.compile(
    r"\b404\b|not[ _-]?found|does ?n[o']t exist|no such|\bunknown\b(?!\s+(error|failure|exception|reason))",
    re.IGNORECASE,
)

_depth: ContextVar[int] = ContextVar("interlock_reference_depth", default=0)


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
class ReferenceSettings:
    checks: tuple[ReferenceCheck, ...] = ()


class ReferenceTable(PolicyTable):
    """An argument that must exist according to a lookup tool, called before the call itself."""

    argument: NonEmpty
    tool: ToolName
    """Exposed name of the lookup tool, e.g. ``crm__get_customer``."""
    arguments: dict[NonEmpty, Cel] | None = None
    """Lookup arguments as CEL expressions; default ``{ <argument> = "args.<argument>" }``."""
    search_tool: ToolName | None = None
    ttl_s: Seconds = 300


def _check(ref: ReferenceTable, rule: str | None = None) -> ReferenceCheck:
    if ref.arguments is None:
        # The usual case, an argument looked up under its own name, needs no `arguments` table.
        source = f"args[{json.dumps(ref.argument)}]"
        arguments: dict[str, Any] = {ref.argument: cel(source)}
    else:
        arguments = dict(ref.arguments)
    return ReferenceCheck(
        argument=ref.argument,
        tool=ref.tool,
        arguments=MappingProxyType(arguments),
        source=MappingProxyType({name: expression.source for name, expression in arguments.items()}),
        search_tool=ref.search_tool,
        ttl_s=ref.ttl_s,
    )


def _rows(settings: ReferenceSettings, view: ExplainView) -> Rows:
    rows = []
    for ref in settings.checks:
        lookup = ", ".join(f"{k} = {v}" for k, v in ref.source.items())
        search = f", else search with {ref.search_tool}" if ref.search_tool else ""
        rows.append(
            ("reference", f"{ref.argument} must exist: {ref.tool} {{{lookup}}} (ttl_s={ref.ttl_s:g}{search})")
        )
    return rows


REFERENCES: Unit[ReferenceSettings] = Unit(
    name="references",
    default=ReferenceSettings(),
    keys={
        "references": Key(
            list[ReferenceTable],
            "Arguments that must exist according to a lookup tool (every matching rule's checks).",
            combine=appended,
            convert=lambda refs, rule: tuple(_check(ref) for ref in refs),
        )
    },
    build=lambda values: ReferenceSettings(values["references"]),
    rows=_rows,
)


class ReferenceChecks:
    """Refuses a call whose argument names something a lookup tool says does not exist.

    For each ``ReferenceCheck`` of the policy whose argument is present, it evaluates the lookup
    arguments over the call, runs the lookup tool through the same pipeline (access, rate limits
    and validation apply to the lookup too) and refuses with ``invalid_arguments`` when the answer
    is "not found": an ``isError`` result whose text reads like a 404 / not found / does not exist /
    no such / unknown, or a ``not_found`` error. Every missing reference is listed, and the hint
    names the check's ``search_tool``.

    Keys its answers on (lookup tool, canonical JSON of the lookup arguments), kept ``ttl_s`` by
    the injected clock. Answers are shared by every client: a check whose answer depends on the
    caller puts ``client`` into its lookup arguments. Only "exists" and "not found" are cached.

    Fails open: a lookup that breaks (any other error, an ``isError`` that is not a not-found, an
    expression that raises, ``input_required``) lets the call through, logged and not cached. A
    broken lookup must not take down writes the upstream would judge anyway.

    It stands right after argument validation (lookups run only for well-formed arguments, and a
    refused call never costs one) and before approval (a human never sees an invented id).
    """

    def __init__(self, runner: LookupRunner, clock: Clock, *, max_entries: int = MAX_CACHE_ENTRIES) -> None:
        self._runner = runner
        self._clock = clock
        self._max_entries = max_entries
        self._answers: OrderedDict[tuple[str, str], tuple[bool, float]] = OrderedDict()
        self.lookups = 0

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        checks = call.policy.of(REFERENCES).checks
        if not checks:
            return await call_next(call)
        missing = []
        for check in checks:
            # A lookup tool checking its own argument would only ever look itself up.
            if call.arguments.get(check.argument) is None or check.tool == call.exposed_name:
                continue
            if await self._exists(check, call) is False:
                missing.append(check)
        if missing:
            raise _refusal(call, missing)
        return await call_next(call)

    async def _exists(self, check: ReferenceCheck, call: ToolCall) -> bool | None:
        """True, False, or None when the lookup could not tell."""
        try:
            activation = _activation(call)
            arguments = {name: evaluate(activation) for name, evaluate in check.arguments.items()}
            key = (check.tool, json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str))
        except Exception:  # an operator's expression failing on this call; CEL raises its own types
            log.exception("reference check %s -> %s: lookup arguments failed", check.argument, check.tool)
            return None
        cached = self._cached(key)
        if cached is not None:
            return cached
        answer = await self._lookup(check, arguments, call)
        if answer is not None and check.ttl_s > 0:
            self._answers[key] = (answer, self._clock.monotonic() + check.ttl_s)
            if len(self._answers) > self._max_entries:
                self._answers.popitem(last=False)
        return answer

    def _cached(self, key: tuple[str, str]) -> bool | None:
        found = self._answers.get(key)
        if found is None:
            return None
        answer, expires = found
        if self._clock.monotonic() >= expires:
            del self._answers[key]
            return None
        self._answers.move_to_end(key)
        return answer

    async def _lookup(self, check: ReferenceCheck, arguments: dict[str, Any], call: ToolCall) -> bool | None:
        depth = _depth.get()
        if depth >= MAX_LOOKUP_DEPTH:
            log.warning("reference check on %s skipped: lookups nest deeper than %d", check.tool, depth)
            return None
        self.lookups += 1
        token = _depth.set(depth + 1)
        try:
            result = await self._runner(check.tool, arguments, call.caller)
        except NotFound:
            return False
        except GatewayError as exc:
            log.warning(
                "reference lookup %s failed (%s: %s); letting the call through", check.tool, exc.code, exc
            )
            return None
        finally:
            _depth.reset(token)
        return _classify(check, result)


def _classify(check: ReferenceCheck, result: ToolResult) -> bool | None:
    if result.input_required:
        log.warning("reference lookup %s asked for input; letting the call through", check.tool)
        return None
    if not result.is_error:
        return True
    text = result.text()
    if NOT_FOUND_TEXT.search(text):
        return False
    log.warning(
        "reference lookup %s returned an error (%s); letting the call through", check.tool, text[:200]
    )
    return None


def _activation(call: ToolCall) -> dict[str, Any]:
    return {
        "args": call.arguments,
        "client": call.caller.principal,
        "server": call.server,
        "tool": call.exposed_name,
        "session": call.caller.session_key,
        "annotations": call.annotations,
    }


def _refusal(call: ToolCall, missing: list[ReferenceCheck]) -> InvalidArguments:
    violations = [
        {
            "pointer": "/" + check.argument.replace("~", "~0").replace("/", "~1"),
            "keyword": "reference",
            "expected": f"an existing {check.argument} according to {check.tool}",
            "given": given_value(call.arguments.get(check.argument), [check.argument]),
        }
        for check in missing
    ]
    hints = dict.fromkeys(
        f"Find the right {check.argument} with {check.search_tool}"
        if check.search_tool
        else f"Look up an existing {check.argument} before calling {call.exposed_name}"
        for check in missing
    )
    names = ", ".join(dict.fromkeys(check.argument for check in missing))
    return InvalidArguments(
        f"{call.exposed_name} refers to something that does not exist: {names}.",
        hint="; ".join(hints) + "; do not invent identifiers.",
        details={"violations": violations},
    )


def _build(deps: GuardDeps) -> ReferenceChecks:
    return ReferenceChecks(deps.lookup, deps.clock)


STAGE = Stage("references", _build, REFERENCES)
