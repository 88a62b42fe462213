"""The loaded policy files, and the ``ResolvedPolicy`` of each call.

How rules combine (the full text is in ``docs/policies.md``):

- ``[defaults]`` applies first, then every matching rule in load order (files by name, rules in
  file order); a rule matches when its ``match`` globs fit and its ``when`` (if any) is true.
- A setting a rule sets overrides the value before it (later wins); ``retry`` keys, ``hints`` per
  code and ``arguments`` per argument and constraint merge the same way, key by key.
- ``breaker`` and ``loops`` merge key by key as ``retry`` does; ``concurrency`` is replaced whole.
- ``references``, ``reminder`` texts and ``error_patterns`` accumulate; ``rate_limits`` accumulate
  by name, a later limit replacing an earlier one of the same name.
- ``access = "deny"`` from any matching rule wins over every ``allow`` (deny is sticky); with no
  matching rule setting ``access``, the ``[defaults]`` value holds.

Resolution is cached: which rules match by name (server, upstream tool, exposed name, client) is
computed once per name tuple (bounded LRU), and merged policies are memoized per outcome of the
``when`` conditions, so a call evaluates only its ``when`` expressions and nothing else. A
``PolicySet`` is immutable once loaded; a reload builds a new one (compare ``digest``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from gateway.config.cel import VARIABLES, CelError, Expression, context_for, only
from gateway.config.policy_loader import CompiledRule, LoadedPolicies, Patch, read_policies
from gateway.core.policy import (
    ApprovalRequirement,
    ArgumentConstraint,
    BreakerSettings,
    ConcurrencyLimit,
    ErrorPattern,
    LoopSettings,
    RateLimit,
    ReferenceCheck,
    ResolvedPolicy,
    RetrySettings,
)

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

    __slots__ = ("arg_keys", "conditional", "defaults", "rules", "variables", "variants")

    def __init__(self, defaults: Patch, rules: tuple[CompiledRule, ...]) -> None:
        self.defaults = defaults
        self.rules = rules
        self.conditional = tuple(rule for rule in rules if rule.when is not None)
        whens = [rule.when for rule in self.conditional if rule.when is not None]
        self.variables = frozenset(name for when in whens for name in when.variables)
        self.arg_keys = _arg_keys(whens)
        self.variants: dict[tuple[bool, ...], ResolvedPolicy] = {}

    def policy(self, outcomes: tuple[bool, ...]) -> ResolvedPolicy:
        found = self.variants.get(outcomes)
        if found is None:
            held = iter(outcomes)
            applied = [rule for rule in self.rules if rule.when is None or next(held)]
            found = merge(self.defaults, applied)
            if len(self.variants) < MAX_VARIANTS:
                self.variants[outcomes] = found
        return found


class PolicySet:
    """Every policy file of a folder, compiled; resolves the policy of each call."""

    def __init__(self, loaded: LoadedPolicies | None = None) -> None:
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

    def is_listed(self, ctx: PolicyContext) -> bool:
        """Whether a tool belongs in this client's ``tools/list`` (``ctx.args`` is ignored).

        A tool is hidden only when every call of it would be denied: a deny whose ``when`` reads
        ``args`` or ``session`` may not hold for some call, and an allow like it may hold.
        """
        candidates = self._candidates(ctx.server, ctx.tool, ctx.exposed, ctx.client)
        context = self._context(ctx, candidates) if candidates.conditional else None
        access = self._loaded.defaults.access or "allow"
        for rule in candidates.rules:
            if rule.patch.access is None:
                continue
            holds = True
            if rule.when is not None:
                unknowable = bool(rule.when.variables & _CALL_TIME)
                holds = rule.patch.access == "allow" if unknowable else self._holds(rule, context)
            if holds and rule.patch.access == "deny":
                return False
            if holds:
                access = "allow"
        return access == "allow"

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
        return _Candidates(self._loaded.defaults, rules)

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


def load_policies(folder: Path) -> PolicySet:
    """Load ``folder/*.toml``; raise ``ConfigError`` (a ``PolicyError``) listing every problem.

    A missing or empty folder gives the built-in defaults (``PolicySet.files`` is empty).
    """
    return PolicySet(read_policies(Path(folder)))


def merge(defaults: Patch, rules: Sequence[CompiledRule]) -> ResolvedPolicy:
    """``[defaults]`` and then each rule, in order; see the module docstring for the rules."""
    values: dict[str, Any] = {}
    retry: dict[str, Any] = {}
    hints: dict[str, str] = {}
    arguments: dict[str, dict[str, Any]] = {}
    references: list[ReferenceCheck] = []
    reminders: list[str] = []
    patterns: list[ErrorPattern] = []
    breaker: dict[str, Any] = {}
    loops: dict[str, Any] = {}
    limits: dict[str, RateLimit] = {}
    concurrency: ConcurrencyLimit | None = None
    approval: ApprovalRequirement | None = None
    for patch in (defaults, *(rule.patch for rule in rules)):
        values.update(patch.scalars)
        retry.update(patch.retry)
        hints.update(patch.hints)
        for name, constraints in patch.arguments:
            arguments.setdefault(name, {}).update(constraints)
        references.extend(patch.references)
        if patch.reminder is not None and patch.reminder not in reminders:
            reminders.append(patch.reminder)
        patterns.extend(patch.error_patterns)
        breaker.update(patch.breaker)
        loops.update(patch.loops)
        limits.update((limit.name, limit) for limit in patch.rate_limits)
        if patch.concurrency is not None:
            concurrency = patch.concurrency
        if patch.approval is not None:  # replaced whole; False lifts it
            approval = patch.approval or None
    said = {rule.patch.access for rule in rules}
    access = "deny" if "deny" in said else "allow" if "allow" in said else defaults.access or "allow"
    return ResolvedPolicy(
        rules=tuple(rule.name for rule in rules),
        access=access,
        retry=replace(RetrySettings(), **retry),
        hints=MappingProxyType(hints),
        argument_constraints=MappingProxyType(
            {name: ArgumentConstraint(**constraints) for name, constraints in arguments.items()}
        ),
        references=tuple(references),
        reminders=tuple(reminders),
        error_patterns=tuple(patterns),
        breaker=_breaker(breaker),
        rate_limits=tuple(limits.values()),
        concurrency=concurrency,
        loops=replace(LoopSettings(), **loops) if loops else LoopSettings(),
        approval=approval,
        **values,
    )


def _breaker(keys: dict[str, Any]) -> BreakerSettings:
    settings = replace(BreakerSettings(), **keys) if keys else BreakerSettings()
    # Each table is checked on its own at load; merged tables may still cross (a rule's
    # window_size = 5 under [defaults]' minimum_calls = 10). The window never holds more than
    # window_size outcomes, and a first break cannot exceed the longest.
    if settings.minimum_calls > settings.window_size:
        settings = replace(settings, minimum_calls=settings.window_size)
    if settings.break_s > settings.max_break_s:
        settings = replace(settings, break_s=settings.max_break_s)
    return settings


def explain_text(policies: PolicySet, ctx: PolicyContext) -> str:
    """A readable report for ``interlock policy explain``: each rule and why, then the result."""
    lines = [
        f"Policy for {ctx.exposed} (server {ctx.server!r}, upstream tool {ctx.tool!r}), "
        f"client {ctx.client!r}" + (f", session {ctx.session!r}" if ctx.session else ""),
        f"args: {_json(ctx.args)}",
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
    lines += [f"  {name:<19} {value}" for name, value in _fields(policy, ctx)]
    return "\n".join(lines) + "\n"


def _fields(policy: ResolvedPolicy, ctx: PolicyContext) -> list[tuple[str, str]]:
    retry = policy.retry
    idempotent = policy.is_idempotent(ctx.annotations)
    why = "policy" if policy.idempotent is not None else "trusted annotations"
    if policy.idempotent is None and not policy.trust_annotations:
        why = "annotations not trusted"
    rows = [
        ("access", policy.access),
        ("timeout_s", "server default" if policy.timeout_s is None else f"{policy.timeout_s:g}"),
        ("idempotent", f"{_toml(idempotent)} ({why})"),
        ("trust_annotations", _toml(policy.trust_annotations)),
        (
            "retry",
            f"max_attempts={retry.max_attempts} base_delay_s={retry.base_delay_s:g} "
            f"max_delay_s={retry.max_delay_s:g} max_retry_after_s={retry.max_retry_after_s:g} "
            f"budget_ratio={retry.budget_ratio:g}" + ("" if idempotent else " (not used: not idempotent)"),
        ),
        ("validate_arguments", _toml(policy.validate_arguments)),
        ("output_validation", policy.output_validation),
        ("max_result_bytes", "no cap" if policy.max_result_bytes is None else str(policy.max_result_bytes)),
        ("pinning", policy.pinning),
        ("reminder_every", str(policy.reminder_every)),
    ]
    for name, constraint in policy.argument_constraints.items():
        shown = " ".join(
            f"{key}={_json(value)}"
            for key in ArgumentConstraint.__slots__
            if (value := getattr(constraint, key)) is not None
        )
        rows.append((f"arguments.{name}", shown))
    for ref in policy.references:
        lookup = ", ".join(f"{k} = {v}" for k, v in ref.source.items())
        search = f", else search with {ref.search_tool}" if ref.search_tool else ""
        rows.append(
            ("reference", f"{ref.argument} must exist: {ref.tool} {{{lookup}}} (ttl_s={ref.ttl_s:g}{search})")
        )
    rows += _guard_rows(policy, ctx)
    rows += [(f"hints.{code}", _json(text)) for code, text in policy.hints.items()]
    rows += [("error_pattern", f"{p.code} <- {p.pattern.pattern!r}") for p in policy.error_patterns]
    rows += [("reminder", _json(text)) for text in policy.reminders]
    return rows


def _guard_rows(policy: ResolvedPolicy, ctx: PolicyContext) -> list[tuple[str, str]]:
    """Breaker, rate limits, concurrency and loop detection, as ``key=value`` lists."""
    breaker = policy.breaker
    if breaker.enabled:
        keyed = (
            f"per tool ({ctx.server!r}, {ctx.tool!r})" if breaker.per_tool else f"per server {ctx.server!r}"
        )
        fallback = "" if breaker.fallback == "none" else f" fallback={breaker.fallback}"
        if breaker.fallback == "tool":
            fallback += f" fallback_tool={breaker.fallback_tool}"
        skip = {"enabled", "per_tool", "fallback", "fallback_tool"}
        shown = f"on, {keyed}: {_settings(breaker, skip)}{fallback}"
    else:
        shown = "off"
    rows = [("breaker", shown)]
    if not policy.rate_limits:
        rows.append(("rate_limits", "none"))
    for limit in policy.rate_limits:
        rows.append((f"rate_limits.{limit.name}", _settings(limit, {"name"})))
    rows.append(("rate_limit_on_store_error", policy.rate_limit_on_store_error))
    pool = policy.concurrency
    shown = "no limit" if pool is None else f"{_settings(pool)} (for all of server {ctx.server!r})"
    rows.append(("concurrency", shown))
    loops = policy.loops
    quiet = {"enabled"} if loops.polling_min_interval_s is not None else {"enabled", "polling_min_interval_s"}
    rows.append(("loops", _settings(loops, quiet) if loops.enabled else "off"))
    rows.append(("approval", _approval_row(policy.approval)))
    return rows


def _approval_row(approval: ApprovalRequirement | None) -> str:
    if approval is None:
        return "not required"
    parts = [f"rule={approval.rule}"]
    if approval.when_source:
        parts.append(f"when `{approval.when_source}`")
    if approval.destructive_only:
        parts.append("destructive_only (trusted annotations)")
    parts.append(f"timeout_s={approval.timeout_s:g}")
    parts.append(
        f"mode={approval.mode}" + (f" fallback={approval.fallback}" if approval.mode == "elicit" else "")
    )
    parts.append(
        "approvers=" + (",".join(approval.approvers) if approval.approvers else "any admin or the client")
    )
    if approval.redact:
        parts.append("redact=" + ",".join(approval.redact))
    return " ".join(parts)


def _settings(settings: Any, skip: set[str] | None = None) -> str:
    """``key=value`` for each field of a core dataclass, as an operator would write it."""
    return " ".join(
        f"{name}={_plain(getattr(settings, name))}" for name in settings.__slots__ if name not in (skip or ())
    )


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return _toml(value)
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _toml(value: bool) -> str:
    return "true" if value else "false"


def _json(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # TOML's `5000` read as a bound is 5000.0; show what was written
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 200 else text[:200] + "..."


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
