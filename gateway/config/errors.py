"""Load errors that name the file and the exact key path, and never echo a secret.

pydantic reports problems against its own location tuples (with union tags and ``[key]`` markers)
and in its own words; operators read TOML, so this module turns each error into
``servers.toml: servers.crm.timeout_s: expected a number, got 'abc'``.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway.config.models import LOADER_FIELDS, PATTERN_HELP, PROBLEMS_ERROR, Config, Loc

MAX_VALUE_CHARS = 60
REDACTED = "<redacted>"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Keys whose values hold credentials; a value below them is never printed.
_SECRET_TABLES = frozenset({"headers", "env"})

_EXPECTED = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file: where (a dotted key path, may be empty) and what."""

    path: str
    message: str


class ConfigError(Exception):
    """A config file that cannot be used; ``str()`` gives one line per problem."""

    def __init__(self, file: str, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(
            f"{self.file}: {p.path}: {p.message}" if p.path else f"{self.file}: {p.message}"
            for p in self.problems
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickling replays args; ours are not (file, problems) without this.
        return (type(self), (self.file, self.problems))


def format_path(loc: Loc) -> str:
    """``('gateway', 'clients', 0, 'key')`` -> ``gateway.clients[0].key``; odd keys quoted as TOML does."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        segment = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
        out = f"{out}.{segment}" if out else segment
    return out


def is_secret_loc(loc: Loc) -> bool:
    """Whether a value at this key path may be a credential, and so must never be printed."""
    if loc[:2] in (("gateway", "clients"), ("admin", "users")):
        return loc[-1] not in ("name", "groups") and "groups" not in loc
    if loc[:1] == ("approvals",) and "secret" in loc:  # [approvals] secret, [approvals.webhook] secret
        return True
    if loc[:2] == ("approvals", "webhook") and "url" in loc:  # a Slack-style URL is a credential
        return True
    return len(loc) >= 3 and loc[0] == "servers" and loc[2] in _SECRET_TABLES


def format_value(value: Any, *, redact: bool = False) -> str:
    """A short, TOML-flavoured picture of a value an operator wrote."""
    if redact:
        return REDACTED
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        cut = value[:MAX_VALUE_CHARS]
        return repr(cut) + ("..." if len(value) > MAX_VALUE_CHARS else "")
    # TOML writes 1.0 as 1.0 but an operator wrote `>= 1`: print whole floats as integers.
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return text[:MAX_VALUE_CHARS] + ("..." if len(text) > MAX_VALUE_CHARS else "")


def translate(
    exc: ValidationError, *, redact: Callable[[Loc], bool] = is_secret_loc
) -> list[tuple[Loc, Problem]]:
    """Each pydantic error of a ``Config`` validation as (key path, Problem)."""
    out: list[tuple[Loc, Problem]] = []
    for error in exc.errors(include_url=False):
        loc, node, is_key = _normalize(error["loc"])
        if error["type"] == PROBLEMS_ERROR:
            for sub, message in (error.get("ctx") or {})["problems"]:
                full = loc + tuple(sub)
                out.append((full, Problem(format_path(full), message)))
            continue
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "transport")
        message = _message(error, loc, node, redact, is_key=is_key)
        out.append((loc, Problem(format_path(loc), message)))
    return out


def _message(error: ErrorDetails, loc: Loc, node: Any, redact: Callable[[Loc], bool], *, is_key: bool) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key(str(loc[-1]) if loc else "", _parent_model(error["loc"]))
    if kind == "union_tag_not_found":
        return f"required key is missing (expected one of {_tags(node)})"
    expected = _expected(error, node)
    if is_key:
        return f"invalid name: {expected}"
    given = error["input"]
    if kind == "union_tag_invalid":
        # pydantic's input here is the whole table; the operator needs the tag they wrote.
        given = (error.get("ctx") or {}).get("tag", given)
    return f"{expected}, got {format_value(given, redact=redact(loc))}"


def _expected(error: ErrorDetails, node: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"expected a number {_BOUNDS[kind]} {format_value(bound)}"
    if kind == "union_tag_invalid":
        return f"expected one of {ctx['expected_tags']}"
    if kind == "literal_error":
        return f"expected {ctx['expected']}"
    if kind == "string_pattern_mismatch":
        return "expected " + PATTERN_HELP.get(ctx["pattern"], f"a value matching {ctx['pattern']}")
    if kind in ("string_too_short", "too_short"):
        if ctx.get("min_length") == 1:
            return "expected a non-empty value"
        unit = "characters" if isinstance(error["input"], str) else "items"
        return f"expected at least {ctx['min_length']} {unit}"
    if kind in ("string_too_long", "too_long"):
        unit = "characters" if isinstance(error["input"], str) else "items"
        return f"expected at most {ctx['max_length']} {unit}"
    return error["msg"].removeprefix("Value error, ")


def _unknown_key(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return "unknown key"
    allowed = [name for name in model.model_fields if not (model is Config and name in LOADER_FIELDS)]
    message = f"unknown key (allowed: {', '.join(allowed)})"
    guess = get_close_matches(key, allowed, n=1)
    return f"{message}; did you mean {guess[0]!r}?" if guess else message


def unknown_key_message(key: str) -> str:
    """For the loader: a top-level key pydantic would accept but a file must not set."""
    return _unknown_key(key, Config)


# --- walking the model types along a pydantic loc -------------------------------------------------


def _normalize(loc: tuple[int | str, ...], root: Any = Config) -> tuple[Loc, Any, bool]:
    """Drop union tags and the ``[key]`` marker from a pydantic loc of a ``root`` model (servers.toml's
    ``Config``, or a policy file's model).

    Also return the type found at its end, and whether the error is about a table's key rather
    than its value.
    """
    node: Any = root
    parent: Any = None
    out: list[str | int] = []
    for index, part in enumerate(loc):
        # Only pydantic's marker, not a TOML key that happens to be spelled "[key]".
        if part == "[key]" and index == len(loc) - 1 and get_origin(_optional(parent)) is dict:
            return tuple(out), str, True
        members = _union_members(node)
        if members:
            # pydantic puts the chosen member's tag in the loc; TOML has no such level.
            parent, node = node, next((m for m in members if part in _literal_values(m)), None)
            continue
        out.append(part)
        parent, node = node, _child(node, part)
    return tuple(out), node, False


def _parent_model(loc: tuple[int | str, ...], root: Any = Config) -> type[BaseModel] | None:
    _, node, _ = _normalize(loc[:-1], root)
    node = _optional(node)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _optional(tp: Any) -> Any:
    """``X | None`` (annotated or not) as ``X``; anything else unwrapped of its annotations."""
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        return _unwrap(rest[0]) if len(rest) == 1 else tp
    return tp


def _union_members(tp: Any) -> list[type[BaseModel]]:
    tp = _unwrap(tp)
    if get_origin(tp) not in (Union, types.UnionType):
        return []
    members = [m for m in get_args(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    return members if len(members) > 1 else []


def _literal_values(model: type[BaseModel]) -> tuple[Any, ...]:
    field = model.model_fields.get("transport")
    if field is None or get_origin(field.annotation) is not Literal:
        return ()
    return get_args(field.annotation)


def _tags(node: Any) -> str:
    return ", ".join(repr(v) for m in _union_members(node) for v in _literal_values(m))


def _child(tp: Any, part: str | int) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(part))
        return None if field is None else field.annotation
    args = get_args(tp)
    if get_origin(tp) is list and args:
        return args[0]
    if get_origin(tp) is dict and len(args) == 2:
        return args[1]
    if get_origin(tp) in (Union, types.UnionType):
        # `X | None`: follow the non-None member.
        rest = [a for a in args if a is not type(None)]
        return _child(rest[0], part) if len(rest) == 1 else None
    return None
