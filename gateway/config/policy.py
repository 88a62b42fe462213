"""The loaded policy files, and the ``ResolvedPolicy`` of each call.

How rules combine (the full text is in ``docs/policies.md``): ``[defaults]`` applies first, then
every matching rule in load order (files by name, rules in file order); a rule matches when its
``match`` globs fit and its ``when`` (if any) is true. How the values of one key combine (a later
value replaces, tables merge key by key, lists accumulate, named items replace by name, ``deny``
is sticky) is declared by the unit that owns the key (``gateway.config.units``), so this module
knows no guard by name.

Resolution is cached: which rules match by name (server, upstream tool, exposed name, client) is
computed once per name tuple (bounded LRU), and merged policies are memoized per outcome of the
``when`` conditions, so a call evaluates only its ``when`` expressions and nothing else. A
``PolicySet`` is immutable once loaded; a reload builds a new one (compare ``digest``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from gateway.config.cel import VARIABLES, CelError, Expression, context_for, only
from gateway.config.policy_loader import CompiledRule, LoadedPolicies, Values, read_policies
from gateway.config.policy_models import PolicyModels
from gateway.config.units import ExplainView, Setting, Unit, json_text
from gateway.core.policy import ResolvedPolicy

if TYPE_CHECKING:
    import cel

    from gateway.core.call import ToolCall

Variables: TypeAlias = "dict[str, Any] | cel.Context"

log = logging.getLogger("interlock.policy")

CACHE_SIZE = 4096
"""(server, tool, exposed, client) tuples whose matching rules are remembered."""
MAX_VARIANTS = 64
"""Merged policies remembered per tuple, one per combination of ``when`` outcomes."""
# The MCP spec's meaning of an absent hint, so that `annotations.destructiveHint` always reads.
ANNOTATION_DEFAULTS: Mapping[str, bool] = MappingProxyType(
    {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": True}
)
# Conditions that read these cannot be decided before the call (see `PolicySet.is_listed`).
_CALL_TIME = frozenset({"args", "session"})


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What a rule can match on: one call, or one tool as a client would see it listed."""

    server: str
    tool: str
    """The upstream tool name."""
    exposed: str
    """The name the agent sees: namespaced, possibly renamed."""
    client: str = "anonymous"
    args: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, Any] = field(default_factory=dict)
    session: str = ""

    @classmethod
    def for_call(cls, call: ToolCall) -> PolicyContext:
        return cls(
            server=call.server,
            tool=call.tool,
            exposed=call.exposed_name,
            client=call.caller.principal,
            args=call.arguments,
            annotations=call.annotations,
            session=call.caller.session_key,
        )

    def activation(
        self, names: Iterable[str] = VARIABLES, arg_keys: frozenset[str] | None = None
    ) -> dict[str, Any]:
        """The variables of a CEL condition: only ``names``, and of ``args`` only ``arg_keys``
        (None: all), because each value costs a conversion to CEL."""
        values = {name: getattr(self, name) for name in names}
        if "annotations" in values:
            values["annotations"] = {**ANNOTATION_DEFAULTS, **self.annotations}
        if "args" in values:
            values["args"] = only(self.args, arg_keys)
        return values


@dataclass(frozen=True, slots=True)
class ExplainStep:
    """One line of ``policy explain``: a rule (or ``[defaults]``), whether it applied, and why."""

    rule: str
    where: str
    matched: bool
    reasons: tuple[str, ...]


class _Candidates:
    """The rules whose ``match`` fits one (server, tool, exposed, client), in order."""

    __slots__ = ("_defaults", "arg_keys", "conditional", "language", "rules", "variables", "variants")

    def __init__(self, language: PolicyLanguage, defaults: Values, rules: tuple[CompiledRule, ...]) -> None:
        self.language = language
        self.rules = rules
        self.conditional = tuple(rule for rule in rules if rule.when is not None)
        whens = [rule.when for rule in self.conditional if rule.when is not None]
        self.variables = frozenset(name for when in whens for name in when.variables)
        self.arg_keys = _arg_keys(whens)
        self.variants: dict[tuple[bool, ...], ResolvedPolicy] = {}
        self._defaults = defaults

    def policy(self, outcomes: tuple[bool, ...]) -> ResolvedPolicy:
        found = self.variants.get(outcomes)
        if found is None:
            held = iter(outcomes)
            applied = [rule for rule in self.rules if rule.when is None or next(held)]
            found = self.language.merge(self._defaults, applied)
            if len(self.variants) < MAX_VARIANTS:
                self.variants[outcomes] = found
        return found


class PolicyLanguage:
    """The policy files a list of units defines: their models, loading, merging and explaining."""

    def __init__(self, units: Sequence[Unit[Any]]) -> None:
        self.units = tuple(units)
        self.models = PolicyModels(self.units)
        self.names = tuple(unit.name for unit in self.units)
        """Every unit's name, in pipeline order: the values of the ``guard`` label and field."""

    def load(self, folder: Path) -> PolicySet:
        """Load ``folder/*.toml``; raise ``ConfigError`` (a ``PolicyError``) listing every problem.

        A missing or empty folder gives the built-in defaults (``PolicySet.files`` is empty).
        """
        return PolicySet(self, read_policies(Path(folder), self.models))

    def empty(self) -> PolicySet:
        return PolicySet(self)

    def merge(self, defaults: Values, rules: Sequence[CompiledRule]) -> ResolvedPolicy:
        """``[defaults]`` and then each rule, in order, each key combined as its unit says."""
        bodies = [(None, defaults), *((rule.name, rule.values) for rule in rules)]
        settings: dict[str, Any] = {}
        for unit in self.units:
            combined: dict[str, Any] = {}
            for name, key in unit.keys.items():
                found = [Setting(origin, values[name]) for origin, values in bodies if name in values]
                if found:
                    combined[name] = key.combine(found)
            if combined:  # a unit no body touched runs on its defaults: equal policies compare equal
                settings[unit.name] = unit.settings(combined)
        return ResolvedPolicy(tuple(rule.name for rule in rules), MappingProxyType(settings))


class PolicySet:
    """Every policy file of a folder, compiled; resolves the policy of each call."""

    def __init__(self, language: PolicyLanguage, loaded: LoadedPolicies | None = None) -> None:
        self.language = language
        self._loaded = loaded or LoadedPolicies()
        self.files: tuple[Path, ...] = self._loaded.files
        """The files read, in load order; empty when running on the built-in defaults."""
        self.digest: str = self._loaded.digest
        """SHA-256 over the files' names and contents: equal digests, equal policies."""
        self.rules: tuple[CompiledRule, ...] = self._loaded.rules
        self._failed: set[str] = set()
        self._candidates = functools.lru_cache(maxsize=CACHE_SIZE)(self._match)

    def resolve_call(self, call: ToolCall) -> ResolvedPolicy:
        """``resolve`` for a call on its way into the chain (a ``guards.resolve.Resolver``)."""
        return self.resolve(PolicyContext.for_call(call))

    def resolve(self, ctx: PolicyContext) -> ResolvedPolicy:
        """The policy ``ctx`` runs under. Never raises: a failing ``when`` means "no match"."""
        candidates = self._candidates(ctx.server, ctx.tool, ctx.exposed, ctx.client)
        if not candidates.conditional:
            return candidates.policy(())
        context = self._context(ctx, candidates)
        outcomes = tuple(self._holds(rule, context) for rule in candidates.conditional)
        return candidates.policy(outcomes)

    def resolve_listed(self, ctx: PolicyContext) -> ResolvedPolicy:
        """The policy of a tool as listed, before any call (tool pinning reads it).

        There are no arguments and no session yet: a rule whose ``when`` reads them does not apply,
        and is not evaluated, so that it neither fails nor uses up its once-per-rule failure log.
        """
        candidates = self._candidates(ctx.server, ctx.tool, ctx.exposed, ctx.client)
        if not candidates.conditional:
            return candidates.policy(())
        context = self._context(ctx, candidates)
        outcomes = tuple(
            rule.when is not None and not (rule.when.variables & _CALL_TIME) and self._holds(rule, context)
            for rule in candidates.conditional
        )
        return candidates.policy(outcomes)

    def is_listed(self, ctx: PolicyContext) -> bool:
        """Whether a tool belongs in this client's ``tools/list`` (``ctx.args`` is ignored).

        A tool is hidden only when every call of it would be denied: a deny whose ``when`` reads
        ``args`` or ``session`` may not hold for some call, and an allow like it may hold.
        ``access`` is the one key the catalog reads before any call.
        """
        candidates = self._candidates(ctx.server, ctx.tool, ctx.exposed, ctx.client)
        context = self._context(ctx, candidates) if candidates.conditional else None
        access = self._loaded.defaults.get("access", "allow")
        for rule in candidates.rules:
            said = rule.values.get("access")
            if said is None:
                continue
            holds = True
            if rule.when is not None:
                unknowable = bool(rule.when.variables & _CALL_TIME)
                holds = said == "allow" if unknowable else self._holds(rule, context)
            if holds and said == "deny":
                return False
            if holds:
                access = "allow"
        return bool(access == "allow")

    def explain(self, ctx: PolicyContext) -> list[ExplainStep]:
        """Every rule in order, matched or not and why; ``[defaults]`` first when a file sets it."""
        steps: list[ExplainStep] = []
        if self._loaded.defaults_file is not None:
            steps.append(ExplainStep("[defaults]", self._loaded.defaults_file, True, ("always applies",)))
        for rule in self.rules:
            matched, reasons = _match_reasons(rule, ctx)
            if rule.when is not None:
                if not matched:
                    reasons.append("when: not evaluated")
                else:
                    matched, reason = self._when_reason(rule, ctx)
                    reasons.append(reason)
            steps.append(ExplainStep(rule.name, rule.where, matched, tuple(reasons)))
        return steps

    def _match(self, server: str, tool: str, exposed: str, client: str) -> _Candidates:
        rules = tuple(rule for rule in self.rules if _matches(rule, server, tool, exposed, client))
        return _Candidates(self.language, self._loaded.defaults, rules)

    def _context(self, ctx: PolicyContext, candidates: _Candidates) -> Variables | None:
        values = ctx.activation(candidates.variables, candidates.arg_keys)
        if len(candidates.conditional) == 1:
            return values  # one evaluation: handing the dict to CEL directly is cheapest
        try:
            return context_for(values)
        except CelError as exc:
            for rule in candidates.conditional:
                self._failed_once(rule, str(exc))
            return None

    def _holds(self, rule: CompiledRule, context: Variables | None) -> bool:
        if context is None or rule.when is None:
            return False
        try:
            value = rule.when.run(context)
        except CelError as exc:
            self._failed_once(rule, str(exc))
            return False
        if not isinstance(value, bool):
            self._failed_once(rule, f"gave {value!r}, not true or false")
            return False
        return value

    def _when_reason(self, rule: CompiledRule, ctx: PolicyContext) -> tuple[bool, str]:
        assert rule.when is not None
        try:
            value = rule.when(ctx.activation())
        except CelError as exc:
            return False, f"when `{rule.when.source}` failed ({exc}), so the rule does not match"
        if not isinstance(value, bool):
            return False, f"when `{rule.when.source}` gave {value!r}, not true or false: no match"
        return value, f"when `{rule.when.source}` is {'true' if value else 'false'}"

    def _failed_once(self, rule: CompiledRule, message: str) -> None:
        # A broken condition fails on every call; one line per rule and reload is enough.
        if rule.name in self._failed:
            return
        self._failed.add(rule.name)
        log.warning(
            "policy rule %r (%s): `when` failed, so the rule does not match: %s "
            "(logged once per rule until the policies reload)",
            rule.name,
            rule.where,
            message,
        )


def explain_text(policies: PolicySet, ctx: PolicyContext) -> str:
    """A readable report for ``interlock policy explain``: each rule and why, then the result."""
    lines = [
        f"Policy for {ctx.exposed} (server {ctx.server!r}, upstream tool {ctx.tool!r}), "
        f"client {ctx.client!r}" + (f", session {ctx.session!r}" if ctx.session else ""),
        f"args: {json_text(ctx.args)}",
        "files: " + (", ".join(map(str, policies.files)) or "none (built-in defaults)"),
        "",
        "rules, in order:",
    ]
    steps = policies.explain(ctx)
    width = max((len(step.rule) for step in steps), default=0)
    for step in steps:
        status = "applied" if step.rule == "[defaults]" else "MATCHED" if step.matched else "no"
        lines.append(f"  {status:<8} {step.rule:<{width}}  {step.where}")
        lines.extend(f"  {'':<8} {'':<{width}}    {reason}" for reason in step.reasons)
    if not steps:
        lines.append("  (none)")
    policy = policies.resolve(ctx)
    lines += ["", f"resolved policy (rules applied: {', '.join(policy.rules) or 'none'}):"]
    view = ExplainView(policy, ctx.server, ctx.tool, ctx.annotations)
    for unit in policies.language.units:
        lines += [f"  {name:<19} {value}" for name, value in unit.rows(policy.of(unit), view)]
    return "\n".join(lines) + "\n"


def _arg_keys(whens: Sequence[Expression]) -> frozenset[str] | None:
    keys: set[str] = set()
    for when in whens:
        if "args" not in when.variables:
            continue
        if when.arg_keys is None:
            return None
        keys |= when.arg_keys
    return frozenset(keys)


def _any(globs: tuple[str, ...], name: str) -> bool:
    return any(fnmatchcase(name, glob) for glob in globs)


def _matches(rule: CompiledRule, server: str, tool: str, exposed: str, client: str) -> bool:
    return (
        (rule.servers is None or _any(rule.servers, server))
        and (rule.tools is None or _any(rule.tools, tool) or _any(rule.tools, exposed))
        and (rule.clients is None or _any(rule.clients, client))
    )


def _match_reasons(rule: CompiledRule, ctx: PolicyContext) -> tuple[bool, list[str]]:
    checks = [
        ("server", rule.servers, (ctx.server,)),
        ("tool", rule.tools, (ctx.tool, ctx.exposed)),
        ("client", rule.clients, (ctx.client,)),
    ]
    matched, reasons = True, []
    for what, globs, names in checks:
        if globs is None:
            continue
        shown = " / ".join(repr(n) for n in dict.fromkeys(names))
        hit = next((g for g in globs if any(fnmatchcase(n, g) for n in names)), None)
        if hit is None:
            matched = False
            reasons.append(f"{what} {shown} matches none of {', '.join(map(repr, globs))}")
        else:
            reasons.append(f"{what} {shown} matches {hit!r}")
    if all(globs is None for _, globs, _ in checks):
        reasons.append("no match table: applies to every call")
    return matched, reasons
