"""Read ``policies/*.toml``: parse, validate, compile CEL and regexes, check across files.

The result is plain compiled data (``LoadedPolicies``); ``gateway.config.policy`` matches and
merges it per call. Every problem of every file is collected before raising, as for servers.toml.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from gateway.config.cel import CelError, Expression, compile_expression
from gateway.config.errors import (
    ConfigError,
    Problem,
    _expected,
    _normalize,
    _parent_model,
    _unknown_key,
    format_path,
    format_value,
)
from gateway.config.loader import _in_document_order, parse_toml
from gateway.config.models import PROBLEMS_ERROR, Loc
from gateway.config.policy_models import (
    Approval,
    Concurrency,
    PolicyBody,
    PolicyFile,
    RateLimitTable,
    Reference,
)
from gateway.core.policy import ApprovalRequirement, ConcurrencyLimit, ErrorPattern, RateLimit, ReferenceCheck

Access = Literal["allow", "deny"]
SCALARS = (
    "idempotent",
    "timeout_s",
    "trust_annotations",
    "validate_arguments",
    "output_validation",
    "max_result_bytes",
    "pinning",
    "reminder_every",
    "rate_limit_on_store_error",
)
"""Settings a later rule simply overrides (``access`` is not one of them: deny is sticky)."""


@dataclass(frozen=True, slots=True)
class Patch:
    """What one ``[defaults]`` or rule body sets, ready to merge without looking at a model."""

    access: Access | None = None
    scalars: tuple[tuple[str, Any], ...] = ()
    retry: tuple[tuple[str, Any], ...] = ()
    hints: tuple[tuple[str, str], ...] = ()
    arguments: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    references: tuple[ReferenceCheck, ...] = ()
    reminder: str | None = None
    error_patterns: tuple[ErrorPattern, ...] = ()
    breaker: tuple[tuple[str, Any], ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    concurrency: ConcurrencyLimit | None = None
    loops: tuple[tuple[str, Any], ...] = ()
    approval: ApprovalRequirement | Literal[False] | None = None
    """``False``: this body lifts an earlier approval (``approval = { required = false }``)."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    file: str
    index: int
    """Position in its file's ``rules`` list, for ``rules[3]`` in messages."""
    servers: tuple[str, ...] | None
    tools: tuple[str, ...] | None
    clients: tuple[str, ...] | None
    when: Expression | None
    patch: Patch

    @property
    def where(self) -> str:
        return f"{self.file} rules[{self.index}]"


@dataclass(frozen=True, slots=True)
class LoadedPolicies:
    files: tuple[Path, ...] = ()
    digest: str = hashlib.sha256().hexdigest()
    defaults: Patch = Patch()
    defaults_file: str | None = None
    rules: tuple[CompiledRule, ...] = ()


class PolicyError(ConfigError):
    """Problems in one or more policy files; ``str()`` gives one line per problem, each with its file."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__(self.errors[0].file, [p for e in self.errors for p in e.problems])

    def __str__(self) -> str:
        return "\n".join(str(error) for error in getattr(self, "errors", ()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


def policy_files(folder: Path) -> list[Path]:
    """The files loaded, in load order: ``*.toml`` directly in the folder, by name, no hidden files."""
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise ConfigError(str(folder), [Problem("", "is a file, not a folder of policy files")])
    try:
        found = [p for p in folder.iterdir() if p.suffix == ".toml" and p.is_file()]
    except OSError as exc:
        raise ConfigError(str(folder), [Problem("", f"cannot read the folder: {exc.strerror}")]) from None
    return sorted((p for p in found if not p.name.startswith(".")), key=lambda p: p.name)


def read_policies(folder: Path) -> LoadedPolicies:
    """Load every policy file of ``folder``; raise ``PolicyError`` listing every problem found."""
    paths = policy_files(folder)
    digest = hashlib.sha256()
    errors: list[ConfigError] = []
    loaded: list[tuple[str, PolicyFile, dict[Loc, Expression]]] = []
    seen = _Seen()
    for path in paths:
        file = str(path)
        try:
            data = _read(path)
            digest.update(path.name.encode() + b"\0" + data + b"\0")
            raw = parse_toml(file, data)
        except ConfigError as exc:
            errors.append(exc)
            continue
        # CEL and the checks across files read the raw TOML, so that their problems are reported
        # together with the model's, in one pass.
        problems: list[tuple[Loc, Problem]] = []
        compiled = _compile_all(raw, problems)
        seen.check(file, raw, problems)
        parsed: PolicyFile | None = None
        try:
            parsed = PolicyFile.model_validate(raw)
        except ValidationError as exc:
            problems.extend(translate(exc))
        if problems:
            errors.append(ConfigError(file, _in_document_order(problems, raw)))
        elif parsed is not None:
            loaded.append((file, parsed, compiled))
    if errors:
        raise PolicyError(errors)
    return _build(tuple(paths), digest.hexdigest(), loaded)


class _Seen:
    """Rule names and ``[defaults]`` across the files read so far."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.defaults: str | None = None

    def check(self, file: str, raw: dict[str, Any], problems: list[tuple[Loc, Problem]]) -> None:
        if "defaults" in raw:
            if self.defaults is not None:
                message = f"[defaults] is already set in {self.defaults}; only one file may set it"
                problems.append((("defaults",), Problem("defaults", message)))
            self.defaults = self.defaults or file
        for index, rule in _rules(raw):
            name = rule.get("name")
            if not isinstance(name, str):
                continue
            loc: Loc = ("rules", index, "name")
            if name in self.names:
                message = f"duplicate rule name {name!r} (first in {self.names[name]})"
                problems.append((loc, Problem(format_path(loc), message)))
            self.names.setdefault(name, f"{file} rules[{index}]")


def _build(
    files: tuple[Path, ...], digest: str, loaded: list[tuple[str, PolicyFile, dict[Loc, Expression]]]
) -> LoadedPolicies:
    defaults, defaults_file = Patch(), None
    rules: list[CompiledRule] = []
    for file, parsed, compiled in loaded:
        if parsed.defaults is not None:
            defaults, defaults_file = _patch(parsed.defaults, ("defaults",), compiled, "defaults"), file
        for index, rule in enumerate(parsed.rules):
            loc: Loc = ("rules", index)
            rules.append(
                CompiledRule(
                    name=rule.name,
                    file=file,
                    index=index,
                    servers=_tuple(rule.match.servers),
                    tools=_tuple(rule.match.tools),
                    clients=_tuple(rule.match.clients),
                    when=compiled.get((*loc, "when")),
                    patch=_patch(rule, loc, compiled, rule.name),
                )
            )
    return LoadedPolicies(files, digest, defaults, defaults_file, tuple(rules))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read the file: {exc.strerror}")]) from None


def _rules(raw: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    rules = raw.get("rules")
    if not isinstance(rules, list):
        return []
    return [(index, rule) for index, rule in enumerate(rules) if isinstance(rule, dict)]


def _expressions(raw: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    """Every CEL source in a file as written: rules' ``when`` and reference lookup arguments."""
    tables: list[tuple[Loc, dict[str, Any]]] = []
    if isinstance(raw.get("defaults"), dict):
        tables.append((("defaults",), raw["defaults"]))
    for index, rule in _rules(raw):
        tables.append((("rules", index), rule))
        if isinstance(rule.get("when"), str) and rule["when"]:
            yield ("rules", index, "when"), rule["when"]
    for loc, table in tables:
        approval = table.get("approval")
        if isinstance(approval, dict) and isinstance(approval.get("when"), str) and approval["when"]:
            yield (*loc, "approval", "when"), approval["when"]
        references = table.get("references")
        for number, ref in enumerate(references if isinstance(references, list) else []):
            arguments = ref.get("arguments") if isinstance(ref, dict) else None
            for name, source in (arguments if isinstance(arguments, dict) else {}).items():
                if isinstance(source, str) and source:
                    yield (*loc, "references", number, "arguments", name), source


def _compile_all(raw: dict[str, Any], problems: list[tuple[Loc, Problem]]) -> dict[Loc, Expression]:
    compiled: dict[Loc, Expression] = {}
    for loc, source in _expressions(raw):
        try:
            compiled[loc] = compile_expression(source)
        except CelError as exc:
            problems.append((loc, Problem(format_path(loc), str(exc))))
    return compiled


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _patch(body: PolicyBody, loc: Loc, compiled: dict[Loc, Expression], name: str) -> Patch:
    def present(model: BaseModel) -> tuple[tuple[str, Any], ...]:
        return tuple(
            (name, tuple(value) if isinstance(value, list) else value)
            for name, value in model
            if value is not None
        )

    return Patch(
        access=body.access,
        scalars=tuple((name, getattr(body, name)) for name in SCALARS if getattr(body, name) is not None),
        retry=present(body.retry) if body.retry else (),
        hints=tuple(body.hints.items()),
        arguments=tuple((name, present(argument)) for name, argument in body.arguments.items()),
        references=tuple(
            _reference(ref, (*loc, "references", i), compiled) for i, ref in enumerate(body.references)
        ),
        reminder=body.reminder,
        error_patterns=tuple(ErrorPattern(p.code, re.compile(p.pattern)) for p in body.error_patterns),
        breaker=present(body.breaker) if body.breaker else (),
        rate_limits=tuple(_rate_limit(limit) for limit in body.rate_limits),
        concurrency=_concurrency(body.concurrency),
        loops=present(body.loops) if body.loops else (),
        approval=_approval(body.approval, (*loc, "approval"), compiled, name),
    )


def _approval(
    table: Approval | None, loc: Loc, compiled: dict[Loc, Expression], rule: str
) -> ApprovalRequirement | Literal[False] | None:
    if table is None:
        return None
    if not table.required:
        return False
    when = compiled.get((*loc, "when")) if table.when else None
    return ApprovalRequirement(
        rule=rule,
        when=when,
        when_source=table.when,
        timeout_s=table.timeout_s,
        approvers=tuple(table.approvers),
        mode=table.mode,
        fallback=table.fallback,
        destructive_only=table.destructive_only,
        reason=table.reason,
        redact=tuple(table.redact),
    )


def _rate_limit(table: RateLimitTable) -> RateLimit:
    # Keys left out keep the core dataclass's defaults (burst 1, per client).
    limit = RateLimit(name=table.name, limit=table.limit, period_s=table.period_s)
    if table.burst is not None:
        limit = replace(limit, burst=table.burst)
    if table.key is not None:
        limit = replace(limit, key=tuple(table.key))
    return limit


def _concurrency(table: Concurrency | None) -> ConcurrencyLimit | None:
    if table is None:
        return None
    if table.max_queue_wait_s is None:
        return ConcurrencyLimit(max_in_flight=table.max_in_flight)
    return ConcurrencyLimit(max_in_flight=table.max_in_flight, max_queue_wait_s=table.max_queue_wait_s)


def _reference(ref: Reference, loc: Loc, compiled: dict[Loc, Expression]) -> ReferenceCheck:
    if ref.arguments is None:
        # The usual case, an argument looked up under its own name, needs no `arguments` table.
        source = {ref.argument: f"args[{json.dumps(ref.argument)}]"}
        arguments = {ref.argument: compile_expression(source[ref.argument])}
    else:
        source = dict(ref.arguments)
        arguments = {name: compiled[(*loc, "arguments", name)] for name in source}
    return ReferenceCheck(
        argument=ref.argument,
        tool=ref.tool,
        arguments=MappingProxyType(arguments),
        source=MappingProxyType(source),
        search_tool=ref.search_tool,
        ttl_s=ref.ttl_s,
    )


# --- pydantic errors in policy-file words ---------------------------------------------------------


def translate(exc: ValidationError) -> list[tuple[Loc, Problem]]:
    """Each pydantic error of a ``PolicyFile`` validation as (key path, Problem)."""
    out: list[tuple[Loc, Problem]] = []
    for error in exc.errors(include_url=False):
        loc, node, is_key = _normalize(error["loc"], PolicyFile)
        kind = error["type"]
        if kind == PROBLEMS_ERROR:
            for sub, message in (error.get("ctx") or {})["problems"]:
                full = loc + tuple(sub)
                out.append((full, Problem(format_path(full), message)))
            continue
        if kind == "missing":
            message = "required key is missing"
        elif kind == "extra_forbidden":
            message = _unknown_key(str(loc[-1]), _parent_model(error["loc"], PolicyFile))
        elif kind == "interlock_error_code":
            message = error["msg"]
        elif kind == "too_short" and error["input"] == []:
            message = "expected at least one item, got an empty list"
        elif is_key:
            message = f"invalid name: {_expected(error, node)}"
        else:
            message = f"{_expected(error, node)}, got {format_value(error['input'])}"
        out.append((loc, Problem(format_path(loc), message)))
    return out
