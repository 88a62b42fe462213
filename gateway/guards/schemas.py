"""The compiled-schema cache that argument and output validation share, and what a schema may cost.

Bounds on what a schema may cost (an upstream's schema is data from outside; a changed tool can
ship a hostile one):

- a schema larger than ``MAX_SCHEMA_BYTES`` serialized, nested deeper than ``MAX_SCHEMA_DEPTH``,
  not JSON, or invalid against its own metaschema is *unusable*: it is logged once and that tool
  version is not validated (the upstream judges), and the call is noted ``schema_skipped``;
- ``$ref`` never leaves the schema: a ref to a document the schema does not embed makes it unusable
  at compile time, and as a backstop the registry refuses every retrieval (no I/O, ever);
- ``format`` is not asserted (no format checker);
- ``pattern`` is bounded as ``violations.bounded_pattern`` says (safe regexes only, short strings
  only); ``patternProperties`` keys that are not safe regexes make the schema unusable;
- at most ``MAX_VIOLATIONS`` errors are collected.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from jsonschema import validators  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]
from jsonschema_specifications import REGISTRY as _BUNDLED  # type: ignore[import-untyped]  # metaschemas
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from gateway.core import ToolCall
from gateway.guards.violations import bounded_pattern, safe_regex

log = logging.getLogger("interlock.guards.validation")

MAX_SCHEMA_BYTES = 256 * 1024
MAX_SCHEMA_DEPTH = 64
MAX_VIOLATIONS = 20
MAX_CACHE_ENTRIES = 4096

Kind = Literal["input", "constraints", "output"]
_DIALECTS = (
    validators.Draft3Validator,
    validators.Draft4Validator,
    validators.Draft6Validator,
    validators.Draft7Validator,
    validators.Draft201909Validator,
    validators.Draft202012Validator,
)


@dataclass(frozen=True, slots=True)
class ArgumentConstraint:
    """Operator constraints on one argument, checked on top of the upstream's inputSchema."""

    pattern: str | None = None
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None


def _refuse_retrieval(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs class, untyped init


_LOCAL_ONLY: Registry[Any] = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
EMPTY: Mapping[str, Any] = {}


@dataclass(slots=True)
class Compiled:
    """A validator for one tool version, or the reason it has none."""

    validator: Any
    skip_reason: str | None
    source: Mapping[str, Any]
    """The schema object compiled, kept so an identity-keyed entry can never match a reused id."""


class SchemaCache:
    """Compiled validators per (kind, server, tool, schema version, constraints), LRU-bounded.

    Compilation happens once per key; ``compilations`` and ``hits`` are there for tests and
    metrics. Without a ``schema_version`` the schema object's identity is the version.
    """

    def __init__(self, *, max_entries: int = MAX_CACHE_ENTRIES) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[Hashable, Compiled] = OrderedDict()
        self._last_constraints: tuple[Mapping[str, ArgumentConstraint], Hashable] | None = None
        self.compilations = 0
        self.hits = 0

    def get(
        self,
        kind: Kind,
        call: ToolCall,
        schema: Mapping[str, Any],
        constraints: Mapping[str, ArgumentConstraint] = EMPTY,
    ) -> Compiled:
        version = call.schema_version or id(schema)
        key = (kind, call.server, call.tool, version, self._constraints_key(constraints))
        entry = self._entries.get(key)
        if entry is not None and (call.schema_version or entry.source is schema):
            self._entries.move_to_end(key)
            self.hits += 1
            return entry
        self.compilations += 1
        entry = _compile(schema, constraints, _where(kind, call))
        self._entries[key] = entry
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return entry

    def errors(
        self, entry: Compiled, instance: Any, limit: int, kind: Kind, call: ToolCall
    ) -> list[Any] | None:
        """``[]`` when valid, the first ``limit`` errors when not, None when it cannot be checked.

        The happy path is one ``is_valid``; ``iter_errors`` runs only on failure.
        """
        if entry.validator is None:
            return None
        try:
            if entry.validator.is_valid(instance):
                return []
            return list(islice(entry.validator.iter_errors(instance), limit))
        except (Unresolvable, re.error) as exc:
            # Found only when a $ref is followed: this version is skipped from now on.
            entry.validator, entry.skip_reason = None, f"{type(exc).__name__}: {exc}"
            log.warning("not validating the %s: %s", _where(kind, call), entry.skip_reason)
        except RecursionError:
            # Nesting this deep is the upstream's to judge; the version stays validated.
            log.warning("%s: the value nests too deep to validate; passing it on", _where(kind, call))
        return None

    def _constraints_key(self, constraints: Mapping[str, ArgumentConstraint]) -> Hashable:
        if not constraints:
            return None
        last = self._last_constraints
        if last is not None and last[0] is constraints:
            return last[1]
        key: Hashable
        try:
            key = frozenset(constraints.items())
        except TypeError:  # an unhashable enum value
            key = repr(sorted(constraints.items()))
        self._last_constraints = (constraints, key)
        return key


def _where(kind: Kind, call: ToolCall) -> str:
    return f"{kind} schema of {call.server}/{call.tool} ({call.schema_version or 'unversioned'})"


def _compile(
    schema: Mapping[str, Any], constraints: Mapping[str, ArgumentConstraint], where: str
) -> Compiled:
    plain, problem = _load(schema)
    cls = _dialect(plain)
    if problem is None:
        problem = _metaschema_error(cls, plain)
    if problem is not None:
        # An unusable upstream schema is skipped; the operator's constraints still apply.
        log.warning("not validating the %s: %s; the upstream will judge its calls", where, problem)
        plain, cls = {}, validators.Draft202012Validator
    extra = constraints_schema(constraints)
    if extra is not None and (error := _metaschema_error(cls, extra)) is not None:
        log.error("ignoring the operator constraints on %s: %s", where, error)
        extra = None
    if extra is None and problem is not None:
        return Compiled(None, problem, schema)
    root = plain if extra is None else _with_extra(plain, extra, cls)
    return Compiled(_bounded(cls)(root, registry=_LOCAL_ONLY), problem, schema)


def _load(schema: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A plain-dict copy of the schema, or why it is unusable (its size, depth, refs, regexes)."""
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return {}, f"not JSON ({exc})"
    size = len(text.encode())
    if size > MAX_SCHEMA_BYTES:
        return {}, f"{size} bytes, over {MAX_SCHEMA_BYTES}"
    plain = json.loads(text)
    if not isinstance(plain, dict):
        return {}, "not a JSON object"
    return plain, _scan(plain)


def _dialect(schema: Mapping[str, Any]) -> Any:
    """The validator class for ``$schema``; 2020-12 when absent or unknown."""
    uri = schema.get("$schema")
    if not isinstance(uri, str):  # absent, or nonsense the metaschema check will report
        return validators.Draft202012Validator
    found = validators.validator_for(schema, default=None)
    return found or _KNOWN_DIALECTS.get(_normal_uri(uri), validators.Draft202012Validator)


def _normal_uri(uri: object) -> str:
    # Schemas in the wild write http/https and with or without the trailing '#'.
    return str(uri).split("://", 1)[-1].rstrip("#/")


_KNOWN_DIALECTS = {_normal_uri(cls.META_SCHEMA["$schema"]): cls for cls in _DIALECTS}


def _metaschema_error(cls: Any, schema: Mapping[str, Any]) -> str | None:
    # Like cls.check_schema, but without the format checker: a pattern Python cannot compile
    # (ECMA-only syntax) skips that one pattern at run time instead of the whole schema.
    meta = validators.validator_for(cls.META_SCHEMA, default=cls)(cls.META_SCHEMA)
    error = best_match(meta.iter_errors(schema))
    if error is None:
        return None
    return f"invalid against its metaschema at {error.json_path}: {error.message[:200]}"


def _scan(schema: Any) -> str | None:
    """Depth, patternProperties and remote-$ref bounds, walked once at compile time."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    ids: set[str] = set()
    refs: list[str] = []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            return f"nested deeper than {MAX_SCHEMA_DEPTH}"
        if isinstance(node, dict):
            keys = node.get("patternProperties")
            for key in keys if isinstance(keys, dict) else ():
                if safe_regex(key) is None:
                    return f"patternProperties key {key[:80]!r} is not a safe regex"
            ids.update(str(node[k]).split("#")[0] for k in ("$id", "id") if isinstance(node.get(k), str))
            refs.extend(node[k] for k in ("$ref", "$dynamicRef") if isinstance(node.get(k), str))
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
    for ref in refs:
        document = ref.split("#")[0]
        local = document in _BUNDLED or any(i == document or i.endswith("/" + document) for i in ids)
        if document and not local:
            return f"$ref {ref[:120]!r} points outside the schema (never fetched)"
    return None


def constraints_schema(constraints: Mapping[str, ArgumentConstraint]) -> dict[str, Any] | None:
    """The operator's per-argument constraints as a schema to combine with allOf."""
    properties: dict[str, Any] = {}
    for name, c in constraints.items():
        words = {
            "pattern": c.pattern,
            "enum": list(c.enum) if c.enum is not None else None,
            "minimum": c.minimum,
            "maximum": c.maximum,
            "minLength": c.min_length,
            "maxLength": c.max_length,
        }
        properties[name] = {k: v for k, v in words.items() if v is not None}
    return {"properties": properties} if properties else None


def _with_extra(schema: dict[str, Any], extra: dict[str, Any], cls: Any) -> dict[str, Any]:
    # The extra schema joins the root's own allOf so that `#/$defs/...` refs keep resolving.
    root = dict(schema)
    if "$ref" in root and cls in _DIALECTS[:4]:
        # Before 2019-09 a $ref's siblings are ignored: move the $ref into the allOf.
        root["allOf"] = [{"$ref": root.pop("$ref")}, *root.get("allOf", [])]
    root["allOf"] = [*root.get("allOf", []), extra]
    return root


@functools.cache
def _bounded(cls: Any) -> Any:
    return validators.extend(cls, {"pattern": bounded_pattern})
