"""Policy units: how one guard's settings are written, combined across rules, and explained.

Each guard module declares one ``Unit``: its name (the ``guard`` in errors, logs and metrics), its
frozen settings with their defaults, the keys it owns in ``[defaults]`` and in every rule (a pydantic
type each, so unknown keys and bad values are reported at their key path), how each key combines
when several rules set it, how the combined values become settings, and its rows in
``interlock policy explain``. The loader, the merge, ``policy explain`` and the JSON Schema are
derived from the list of units; nothing else in the policy layer names a guard.

A key's value goes through three steps:

1. pydantic validates it as written (``Key.type``);
2. ``Key.convert`` turns it into plain data once per file load (a table into a dict of the keys it
   sets, a list into a tuple, CEL already compiled);
3. ``Key.combine`` folds the values of ``[defaults]`` and the matching rules, in order, into one;
   ``Unit.build`` makes the settings from the combined keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from gateway.core.policy import ResolvedPolicy

S = TypeVar("S")


class PolicyTable(BaseModel):
    """A table of a policy file: unknown keys are errors, values are frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Setting:
    """One value a body set, with where it came from (``rule`` is None for ``[defaults]``)."""

    rule: str | None
    value: Any


Combine = Callable[[Sequence[Setting]], Any]
Convert = Callable[[Any, str | None], Any]
"""(value as validated, rule name or None for [defaults]) -> the plain value to combine."""


def plain(value: Any, rule: str | None = None) -> Any:
    """The default conversion: a table becomes a dict of the keys it sets, lists become tuples."""
    if isinstance(value, BaseModel):
        return {name: plain(item) for name, item in value if item is not None}
    if isinstance(value, list):
        return tuple(plain(item) for item in value)
    if isinstance(value, dict):
        return {name: plain(item) for name, item in value.items()}
    return value


# -- how several rules' values of one key combine ------------------------------------------------


def last(settings: Sequence[Setting]) -> Any:
    """A later rule's value replaces the one before (scalars, and tables replaced whole)."""
    return settings[-1].value


def merged(settings: Sequence[Setting]) -> dict[str, Any]:
    """Tables (and maps) merge key by key, later keys winning."""
    out: dict[str, Any] = {}
    for setting in settings:
        out.update(setting.value)
    return out


def merged_deep(settings: Sequence[Setting]) -> dict[str, dict[str, Any]]:
    """A map of tables: per name, the tables merge key by key (``arguments.<name>.<constraint>``)."""
    out: dict[str, dict[str, Any]] = {}
    for setting in settings:
        for name, table in setting.value.items():
            out.setdefault(name, {}).update(table)
    return out


def appended(settings: Sequence[Setting]) -> tuple[Any, ...]:
    """Lists accumulate, in order."""
    return tuple(item for setting in settings for item in setting.value)


def appended_once(settings: Sequence[Setting]) -> tuple[Any, ...]:
    """Values accumulate in order, each once (the same reminder from two rules is said once)."""
    return tuple(dict.fromkeys(setting.value for setting in settings))


def by_name(attribute: str) -> Combine:
    """Lists of named items accumulate; a later item of the same name replaces the earlier one."""

    def combine(settings: Sequence[Setting]) -> tuple[Any, ...]:
        out: dict[Any, Any] = {}
        for setting in settings:
            out.update((getattr(item, attribute), item) for item in setting.value)
        return tuple(out.values())

    return combine


# -- units -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """One key a unit owns in ``[defaults]`` and in every rule."""

    type: Any
    """The pydantic type of the value as written (``None``, "not set here", is added)."""
    description: str
    combine: Combine = last
    convert: Convert = plain


@dataclass(frozen=True, slots=True)
class ExplainView:
    """What a unit's explain rows may read besides its own settings."""

    policy: ResolvedPolicy
    server: str
    tool: str
    annotations: Mapping[str, Any]


Rows = list[tuple[str, str]]


def _no_rows(settings: Any, view: ExplainView) -> Rows:
    return []


def _replace_fields(default: Any) -> Callable[[Mapping[str, Any]], Any]:
    def build(values: Mapping[str, Any]) -> Any:
        return replace(default, **values)

    return build


@dataclass(frozen=True)
class Unit(Generic[S]):
    """One guard's settings: name, defaults, policy-file keys, combination, explanation."""

    name: str
    """The guard's name: ``details.guard`` in errors, the ``guard`` label of metrics, in logs."""
    default: S
    keys: Mapping[str, Key] = field(default_factory=dict)
    build: Callable[[Mapping[str, Any]], S] | None = None
    """The settings from the combined values of the keys some body set (only those keys are
    present). Default: the default settings with each set key's field replaced."""
    rows: Callable[[S, ExplainView], Rows] = _no_rows

    def settings(self, values: Mapping[str, Any]) -> S:
        if not values:
            return self.default
        build = self.build or _replace_fields(self.default)
        return build(values)


def fields_text(settings: Any, skip: Sequence[str] = ()) -> str:
    """``key=value`` for each field of a settings dataclass, as an operator would write it."""
    return " ".join(
        f"{name}={toml_text(getattr(settings, name))}" for name in settings.__slots__ if name not in skip
    )


def toml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def json_text(value: Any) -> str:
    """A value as JSON for explain rows, cut at 200 characters."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # TOML's `5000` read as a bound is 5000.0; show what was written
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 200 else text[:200] + "..."
