"""Turning JSON Schema errors into the violations an agent can act on.

A violation is a small dict: ``pointer`` (JSON pointer of the offending value), ``keyword`` (the
schema keyword that failed), ``expected`` (plain words built from the keyword and its value, never
from jsonschema's message, which quotes the instance), ``given`` (the value cut short, or
``<redacted>`` when any name on its path looks secret), ``allowed`` for an enum and ``did_you_mean``
for an unknown property. Apart from ``bounded_pattern`` (the one keyword the gateway checks its own
way), this module runs only on the failure path.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

log = logging.getLogger("interlock.guards.validation")

SECRET_MARKERS = ("password", "passwd", "token", "secret", "key", "authorization", "cookie", "credential")
REDACTED = "<redacted>"
MAX_GIVEN_CHARS = 80
MAX_ALLOWED_VALUES = 50
HINT_PHRASES = 5
MAX_PATTERN_INPUT_CHARS = 1024

_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "object": "an object",
    "array": "an array",
    "null": "null",
}
_UNKNOWN_PROPERTY = ("additionalProperties", "unevaluatedProperties")


def is_secret_name(name: object) -> bool:
    """Whether an argument name looks like it holds a secret (case-insensitive substring)."""
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def pointer_of(path: Iterable[Any], prefix: str = "") -> str:
    """RFC 6901 pointer of a path of keys and indexes."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return prefix + "".join("/" + p for p in parts)


def given_value(value: Any, path: Sequence[Any] = ()) -> Any:
    """The value as an agent may see it: short, and never a secret."""
    if any(is_secret_name(p) for p in path):
        return REDACTED
    value = _scrub(value, depth=0)
    if isinstance(value, str):
        return value if len(value) <= MAX_GIVEN_CHARS else value[: MAX_GIVEN_CHARS - 1] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    text = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(text) <= MAX_GIVEN_CHARS else text[: MAX_GIVEN_CHARS - 1] + "…"


def violations_from(errors: Iterable[Any], limit: int, prefix: str = "") -> list[dict[str, Any]]:
    """One violation per failing keyword (one per name for required and unknown properties)."""
    found: list[dict[str, Any]] = []
    for error in errors:
        found.extend(_violations_of(error, prefix))
        if len(found) >= limit:
            return found[:limit]
    return found


def fix_hint(violations: Sequence[Mapping[str, Any]], total: int | None = None) -> str:
    """'Fix these arguments and call again: a must match X; b is required; ...'."""
    phrases = [_phrase(v) for v in violations[:HINT_PHRASES]]
    more = (total if total is not None else len(violations)) - len(phrases)
    tail = f"; and {more} more (see details.violations)" if more > 0 else ""
    return "Fix these arguments and call again: " + "; ".join(phrases) + tail + ". Do not guess values."


def _violations_of(error: Any, prefix: str) -> list[dict[str, Any]]:
    keyword = str(error.validator) if error.validator is not None else "false"
    path = list(error.absolute_path)
    if keyword == "required" and (missing := _missing(error)):
        return [_required(error, path, name, prefix) for name in missing]
    if keyword in _UNKNOWN_PROPERTY and error.validator_value is False:
        unknown = _unknown_properties(error, path, prefix)
        if unknown:
            return unknown
    violation: dict[str, Any] = {
        "pointer": pointer_of(path, prefix),
        "keyword": keyword,
        "expected": expected_words(keyword, error.validator_value, error.schema),
    }
    if keyword != "required":  # draft-03 marks required on the property itself; nothing was given
        violation["given"] = given_value(error.instance, path)
    if keyword == "enum" and isinstance(error.validator_value, list):
        violation["allowed"] = list(error.validator_value[:MAX_ALLOWED_VALUES])
    return [violation]


def _required(error: Any, path: list[Any], name: str, prefix: str) -> dict[str, Any]:
    violation: dict[str, Any] = {
        "pointer": pointer_of([*path, name], prefix),
        "keyword": "required",
        "expected": "required",
    }
    # A missing name next to a stray one that looks like it is the usual hallucination (a typo):
    # name the stray argument even when the schema allows extra properties.
    instance, schema = error.instance, error.schema
    if isinstance(instance, Mapping) and isinstance(schema, Mapping):
        strays = sorted(str(k) for k in instance if k not in _property_names(schema))
        close = difflib.get_close_matches(name, strays, n=1, cutoff=0.6)
        if close:
            violation["given_as"] = close[0]
    return violation


def _missing(error: Any) -> list[str]:
    # jsonschema yields one error per missing name, whose message starts with the name's repr.
    required = error.validator_value if isinstance(error.validator_value, list) else []
    instance = error.instance if isinstance(error.instance, Mapping) else {}
    names = [n for n in required if isinstance(n, str) and n not in instance]
    own = [n for n in names if str(error.message).startswith(repr(n))]
    return own or names[:1]


def _unknown_properties(error: Any, path: list[Any], prefix: str) -> list[dict[str, Any]]:
    instance, schema, message = error.instance, error.schema, str(error.message)
    if not isinstance(instance, Mapping) or not isinstance(schema, Mapping):
        return []
    known = _property_names(schema)
    violations: list[dict[str, Any]] = []
    for name in instance:
        if name in known or repr(name) not in message:
            continue
        violation: dict[str, Any] = {
            "pointer": pointer_of([*path, name], prefix),
            "keyword": error.validator,
            "expected": "no property of this name (it is not in the schema)",
            "given": given_value(instance[name], [*path, name]),
        }
        close = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.6)
        if close:
            violation["did_you_mean"] = close[0]
        violations.append(violation)
    return violations


def _property_names(schema: Mapping[str, Any]) -> set[str]:
    names = set(schema.get("properties") or ())
    for combinator in ("allOf", "anyOf", "oneOf"):
        for branch in schema.get(combinator) or ():
            if isinstance(branch, Mapping):
                names.update(branch.get("properties") or ())
    return {n for n in names if isinstance(n, str)}


def expected_words(keyword: str, value: Any, schema: Any) -> str:
    """What the failing keyword asked for, in words."""
    match keyword:
        case "type":
            types = value if isinstance(value, list) else [value]
            return " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
        case "pattern":
            return f"a string matching {value}"
        case "enum":
            return "one of the allowed values"
        case "required":
            return "required"
        case "const":
            return f"exactly {_short(value)}"
        case "minimum" | "maximum":
            exclusive = isinstance(schema, Mapping) and schema.get(f"exclusive{keyword.title()}") is True
            sign = {"minimum": ">", "maximum": "<"}[keyword] + ("" if exclusive else "=")
            return f"a number {sign} {value}"
        case "exclusiveMinimum" | "exclusiveMaximum":
            return f"a number {'>' if keyword == 'exclusiveMinimum' else '<'} {value}"
        case "multipleOf":
            return f"a multiple of {value}"
        case "minLength" | "maxLength":
            return f"a string of at {_bound(keyword)} {value} characters"
        case "minItems" | "maxItems":
            return f"an array of at {_bound(keyword)} {value} items"
        case "minProperties" | "maxProperties":
            return f"an object with at {_bound(keyword)} {value} properties"
        case "uniqueItems":
            return "an array without duplicate items"
        case "anyOf" | "oneOf":
            return _alternatives(keyword, value)
        case "not":
            return "a value that does not match the excluded schema"
        case "contains" | "minContains" | "maxContains":
            return "an array with the required number of matching items"
        case "dependentRequired" | "dependencies":
            return f"the properties each present property depends on ({_short(value)})"
        case "false":
            return "nothing: no value is allowed here"
        case _:
            return f"a value satisfying {keyword} {_short(value)}"


def _alternatives(keyword: str, branches: Any) -> str:
    branches = branches if isinstance(branches, list) else []
    if branches and all(isinstance(b, Mapping) and set(b) == {"type"} for b in branches):
        return " or ".join(expected_words("type", b["type"], b) for b in branches)
    quantity = "exactly one" if keyword == "oneOf" else "at least one"
    return f"a value matching {quantity} of {len(branches)} allowed shapes"


def _bound(keyword: str) -> str:
    return "least" if keyword.startswith("min") else "most"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_GIVEN_CHARS else text[: MAX_GIVEN_CHARS - 1] + "…"


def _scrub(value: Any, depth: int) -> Any:
    """Replace secret-named values inside containers before anything of them is shown."""
    if depth > 8:
        return "…"
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_name(k) else _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, depth + 1) for v in value]
    return value


def _phrase(violation: Mapping[str, Any]) -> str:
    name = str(violation.get("pointer", "")).lstrip("/") or "the arguments"
    expected = str(violation.get("expected", ""))
    keyword = violation.get("keyword")
    if keyword == "required":
        if "given_as" in violation:
            return f"{name} is required (you sent {violation['given_as']}: rename it)"
        return f"{name} is required"
    if "did_you_mean" in violation:
        return f"remove {name} (did you mean {violation['did_you_mean']}?)"
    if keyword in _UNKNOWN_PROPERTY:
        return f"remove {name}"
    if keyword == "pattern":
        return f"{name} must match {expected.removeprefix('a string matching ')}"
    if "allowed" in violation:
        return f"{name} must be one of {_short(violation['allowed'][:HINT_PHRASES])}"
    return f"{name} must be {expected}"


def bounded_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """The ``pattern`` keyword with a bound on backtracking.

    Python's ``re`` has no timeout, so the bound is on what it is asked: a regex that
    ``regex_risk`` flags (nested variable quantifiers like ``(a+)+``, three variable quantifiers in
    a row like ``\\d*\\d*\\d*``) or that Python cannot compile is not checked (logged once), and
    strings longer than ``MAX_PATTERN_INPUT_CHARS`` are not matched. Both leave the value to the
    upstream. ``(a|aa)*``-style overlapping alternation is not detected; the length bound is what
    limits it.
    """
    if not validator.is_type(instance, "string") or len(instance) > MAX_PATTERN_INPUT_CHARS:
        return
    regex = safe_regex(pattern)
    if regex is not None and regex.search(instance) is None:
        yield ValidationError(f"does not match {pattern!r}")


@functools.lru_cache(maxsize=1024)
def safe_regex(pattern: str) -> re.Pattern[str] | None:
    """The compiled pattern, or None when Python cannot compile it or it risks backtracking."""
    try:
        compiled = re.compile(pattern)
        risk = regex_risk(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        log.warning("not checking pattern %r: %s", pattern[:80], exc)
        return None
    if risk is not None:
        log.warning("not checking pattern %r: %s", pattern[:80], risk)
        return None
    return compiled


_sre: Any = importlib.import_module("re._parser")
_REPEATS = {_sre.MAX_REPEAT, _sre.MIN_REPEAT, getattr(_sre, "POSSESSIVE_REPEAT", None)}


def regex_risk(pattern: str) -> str | None:
    """A heuristic for catastrophic backtracking: why the regex is risky, or None."""
    return _risk(_sre.parse(pattern), inside_repeat=False)


def _risk(sequence: Any, inside_repeat: bool) -> str | None:
    run = 0
    for op, arg in sequence:
        variable = op in _REPEATS and arg[0] != arg[1]
        run = run + 1 if variable else 0
        if run >= 3:
            return "three variable quantifiers in a row"
        if variable and inside_repeat:
            return "nested variable quantifiers"
        for child, repeats in _children(op, arg):
            found = _risk(child, inside_repeat or (repeats and arg[1] > 1))
            if found is not None:
                return found
    return None


def _children(op: Any, arg: Any) -> list[tuple[Any, bool]]:
    if op in _REPEATS:
        return [(arg[2], True)]
    if op == _sre.SUBPATTERN:
        return [(arg[3], False)]
    if op == _sre.BRANCH:
        return [(branch, False) for branch in arg[1]]
    if op in (_sre.ASSERT, _sre.ASSERT_NOT):
        return [(arg[1], False)]
    if op == _sre.ATOMIC_GROUP:
        return [(arg, False)]
    if op == _sre.GROUPREF_EXISTS:
        return [(branch, False) for branch in arg[1:] if branch is not None]
    return []
