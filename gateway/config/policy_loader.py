"""Read ``policies/*.toml``: parse, validate against the units' models, check across files.

The result is plain compiled data (``LoadedPolicies``); ``gateway.config.policy`` matches and
merges it per call. Every problem of every file is collected before raising, as for servers.toml.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.config.cel import Expression
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
from gateway.config.policy_models import PolicyModels

Values = Mapping[str, Any]
"""What one ``[defaults]`` or rule body sets: policy key -> converted value (unset keys absent)."""

_NOTHING: Values = MappingProxyType({})


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
    values: Values = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.file} rules[{self.index}]"


@dataclass(frozen=True, slots=True)
class LoadedPolicies:
    files: tuple[Path, ...] = ()
    digest: str = hashlib.sha256().hexdigest()
    defaults: Values = field(default_factory=lambda: _NOTHING)
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


def read_policies(folder: Path, models: PolicyModels) -> LoadedPolicies:
    """Load every policy file of ``folder``; raise ``PolicyError`` listing every problem found."""
    paths = policy_files(folder)
    digest = hashlib.sha256()
    errors: list[ConfigError] = []
    loaded: list[tuple[str, BaseModel]] = []
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
        problems: list[tuple[Loc, Problem]] = []
        seen.check(file, raw, problems)
        parsed: BaseModel | None = None
        try:
            parsed = models.file.model_validate(raw)
        except ValidationError as exc:
            problems.extend(translate(exc, models.file))
        if problems:
            errors.append(ConfigError(file, _in_document_order(problems, raw)))
        elif parsed is not None:
            loaded.append((file, parsed))
    if errors:
        raise PolicyError(errors)
    return _build(tuple(paths), digest.hexdigest(), loaded, models)


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
        rules = raw.get("rules")
        for index, rule in enumerate(rules if isinstance(rules, list) else []):
            name = rule.get("name") if isinstance(rule, dict) else None
            if not isinstance(name, str):
                continue
            loc: Loc = ("rules", index, "name")
            if name in self.names:
                message = f"duplicate rule name {name!r} (first in {self.names[name]})"
                problems.append((loc, Problem(format_path(loc), message)))
            self.names.setdefault(name, f"{file} rules[{index}]")


def _build(
    files: tuple[Path, ...], digest: str, loaded: list[tuple[str, BaseModel]], models: PolicyModels
) -> LoadedPolicies:
    defaults, defaults_file = _NOTHING, None
    rules: list[CompiledRule] = []
    for file, parsed in loaded:
        body = getattr(parsed, "defaults", None)
        if body is not None:
            defaults, defaults_file = _values(body, None, models), file
        for index, rule in enumerate(getattr(parsed, "rules", ())):
            match = rule.match
            rules.append(
                CompiledRule(
                    name=rule.name,
                    file=file,
                    index=index,
                    servers=_tuple(match.servers),
                    tools=_tuple(match.tools),
                    clients=_tuple(match.clients),
                    when=rule.when,
                    values=_values(rule, rule.name, models),
                )
            )
    return LoadedPolicies(files, digest, defaults, defaults_file, tuple(rules))


def _values(body: BaseModel, rule: str | None, models: PolicyModels) -> Values:
    out: dict[str, Any] = {}
    for name, key in models.keys.items():
        value = getattr(body, name)
        if value is not None:
            out[name] = key.convert(value, rule)
    return MappingProxyType(out)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read the file: {exc.strerror}")]) from None


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


# --- pydantic errors in policy-file words ---------------------------------------------------------


def translate(exc: ValidationError, root: type[BaseModel]) -> list[tuple[Loc, Problem]]:
    """Each pydantic error of a policy file's validation as (key path, Problem)."""
    out: list[tuple[Loc, Problem]] = []
    for error in exc.errors(include_url=False):
        loc, node, is_key = _normalize(error["loc"], root)
        kind = error["type"]
        if kind == PROBLEMS_ERROR:
            for sub, message in (error.get("ctx") or {})["problems"]:
                full = loc + tuple(sub)
                out.append((full, Problem(format_path(full), message)))
            continue
        if kind == "missing":
            message = "required key is missing"
        elif kind == "extra_forbidden":
            message = _unknown_key(str(loc[-1]), _parent_model(error["loc"], root))
        elif kind.startswith("interlock_"):  # our own validators say it in full
            message = error["msg"]
        elif kind == "too_short" and error["input"] == []:
            message = "expected at least one item, got an empty list"
        elif is_key:
            message = f"invalid name: {_expected(error, node)}"
        else:
            message = f"{_expected(error, node)}, got {format_value(error['input'])}"
        out.append((loc, Problem(format_path(loc), message)))
    return out
