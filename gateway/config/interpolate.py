"""``${VAR}`` interpolation of string values, applied to the parsed TOML before validation.

Secrets belong in the environment, not in servers.toml; interpolation is how they get in.
Syntax, deliberately small so that nothing surprising happens inside a password:

- ``${NAME}``: the variable's value; an unset variable is an error (an empty one is not).
- ``${NAME:-default}``: ``default`` when NAME is unset or empty, as in POSIX sh.
- ``$${``: a literal ``${``. A ``$`` anywhere else is just a ``$``.

Keys are never interpolated: key paths must mean the same thing on every machine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.models import Loc

_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_REFERENCE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)
_MAX_SHOWN = 60


@dataclass(frozen=True, slots=True)
class Interpolated:
    data: dict[str, Any]
    # (key path, message), in document order.
    problems: list[tuple[Loc, str]]
    # Strings that held a reference: their values may be secrets, so errors never print them.
    expanded: frozenset[Loc]
    # Strings left as written because a reference failed; their validation errors are noise.
    failed: frozenset[Loc]


def expand(text: str, env: Mapping[str, str]) -> tuple[str, list[str], bool]:
    """Expand one string: (result, problems, whether it held any reference).

    On a problem the result is meaningless and the caller keeps the original text.
    """
    out: list[str] = []
    problems: list[str] = []
    referenced = False
    pos = 0
    for match in _TOKEN.finditer(text):
        out.append(text[pos : match.start()])
        pos = match.end()
        token, body = match.group(0), match.group(1)
        if token == "$${":
            out.append("${")
            continue
        referenced = True
        if body is None:
            problems.append("unterminated '${' (write '$${' for a literal '${')")
            continue
        ref = _REFERENCE.fullmatch(body)
        if ref is None:
            shown = body[:_MAX_SHOWN] + ("..." if len(body) > _MAX_SHOWN else "")
            problems.append(
                f"invalid reference '${{{shown}}}': write ${{NAME}} or ${{NAME:-default}}, where NAME "
                "is letters, digits and '_' and does not start with a digit"
            )
            continue
        name, default = ref["name"], ref["default"]
        value = env.get(name)
        if default is not None and not value:
            value = default
        if value is None:
            problems.append(f"environment variable {name} is not set")
            continue
        out.append(value)
    out.append(text[pos:])
    return "".join(out), problems, referenced


def interpolate(data: Mapping[str, Any], env: Mapping[str, str]) -> Interpolated:
    """Expand every string value of a parsed TOML document, collecting every problem."""
    problems: list[tuple[Loc, str]] = []
    expanded: set[Loc] = set()
    failed: set[Loc] = set()

    def walk(value: Any, loc: Loc) -> Any:
        if isinstance(value, Mapping):
            return {key: walk(item, (*loc, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*loc, index)) for index, item in enumerate(value)]
        if not isinstance(value, str):
            return value
        result, found, referenced = expand(value, env)
        if referenced:
            expanded.add(loc)
        if found:
            problems.extend((loc, message) for message in found)
            failed.add(loc)
            return value
        return result

    result = walk(data, ())
    return Interpolated(result, problems, frozenset(expanded), frozenset(failed))
