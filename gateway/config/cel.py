"""CEL expressions in policy files: compiled once at load, evaluated per call.

CEL (the condition language of Kubernetes, Envoy and agentgateway) is side-effect free and has
no loops, only bounded comprehension macros over lists and maps. The library
(``common-expression-language``, module ``cel``) offers no runtime cost limit, so cost is bounded
here, statically, at compile time:

- a source is at most ``MAX_SOURCE_CHARS`` long, which bounds every literal in it;
- comprehensions (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) may not nest: the cost
  of one comprehension grows with the size of the list it walks, which an agent controls through
  ``args``, and nesting multiplies those sizes.

What remains is linear in the size of the call's arguments, which the gateway already caps
(``gateway.max_body_bytes``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Collection, Mapping
from difflib import get_close_matches
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import cel

MAX_SOURCE_CHARS = 2000
MAX_COMPREHENSION_DEPTH = 1

VARIABLES: tuple[str, ...] = ("server", "tool", "exposed", "args", "client", "session", "annotations")
"""The names an expression in a policy file can read; see ``PolicyContext.activation``."""

# Identifiers that `Program.variables()` reports but that are not variables: CEL type names.
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "dyn"}
)
_MACROS = r"(?:all|exists|exists_one|map|filter)"
_MACRO_OPEN = re.compile(rf"\.\s*{_MACROS}\s*\(")
_BOUND = re.compile(rf"\.\s*{_MACROS}\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
# String literals and // comments: what must not be read as code when scanning a source.
_NOT_CODE = re.compile(
    r"""[rRbB]{0,2}('''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")|//[^\n]*""",
    re.DOTALL,
)
_ARGS = re.compile(r"\bargs\b")
_ARG_ACCESS = re.compile(
    r"""\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()|\[\s*(?:'([^'\\\n]*)'|"([^"\\\n]*)")\s*\])"""
)
_POSITION = re.compile(r"<input>:(\d+):(\d+): ")


class CelError(ValueError):
    """An expression that does not compile, or failed to evaluate; ``str()`` is one readable line."""


class Expression:
    """A compiled CEL expression; call it with an activation (variable name -> Python value).

    Satisfies ``gateway.core.policy.Evaluator``. Calling raises ``CelError`` when evaluation fails
    (a missing key, a type mismatch, a value CEL cannot represent).
    """

    __slots__ = ("_program", "arg_keys", "source", "variables")

    def __init__(
        self, source: str, program: cel.Program, variables: frozenset[str], arg_keys: frozenset[str] | None
    ) -> None:
        self.source = source
        self.variables = variables
        """The activation names the expression reads; only these are converted to CEL values."""
        self.arg_keys = arg_keys
        """The keys of ``args`` it reads, when it reads ``args`` only as ``args.k`` or
        ``args['k']``; None when it may read all of them (``size(args)``, ``args.map(...)``)."""
        self._program = program

    def __call__(self, activation: Mapping[str, Any]) -> Any:
        values = {name: activation[name] for name in self.variables if name in activation}
        if "args" in values:
            values["args"] = only(values["args"], self.arg_keys)
        return self.run(values)

    def run(self, values: dict[str, Any] | cel.Context) -> Any:
        """Evaluate against the variables it reads, or a context prepared by ``context_for``."""
        try:
            return self._program.execute(values)
        except Exception as exc:  # the library raises KeyError, TypeError, RuntimeError, ...
            raise CelError(runtime_message(exc)) from exc

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compile_expression(source: str, *, variables: Collection[str] = VARIABLES) -> Expression:
    """Compile ``source`` once; raise ``CelError`` naming the line and column of a syntax error.

    ``variables`` are the names the expression may read; any other name is a compile error with a
    suggestion (CEL itself would only notice when evaluating it).
    """
    if len(source) > MAX_SOURCE_CHARS:
        raise CelError(f"expression is {len(source)} characters long; the limit is {MAX_SOURCE_CHARS}")
    if not source.strip():
        raise CelError("expected an expression, got an empty string")
    try:
        program: cel.Program = _cel().compile(source)
    except Exception as exc:
        raise CelError(compile_message(str(exc))) from None
    masked = _NOT_CODE.sub(lambda m: "''" if m[1] else "", source)
    if _comprehension_depth(masked) > MAX_COMPREHENSION_DEPTH:
        raise CelError(
            "comprehensions (all, exists, exists_one, map, filter) may not be nested: their cost "
            "multiplies with the sizes of the lists; test the inner condition in a separate rule"
        )
    bound = set(_BOUND.findall(masked))
    used = frozenset(program.variables()) - _TYPE_NAMES - bound
    unknown = sorted(used - set(variables))
    if unknown:
        raise CelError(_unknown_message(unknown, variables))
    return Expression(source, program, used, None if "args" in bound else _arg_keys(source))


def context_for(values: Mapping[str, Any]) -> cel.Context:
    """Convert variables to CEL values once, for several expressions.

    Conversion dominates the cost of an evaluation (about 1 µs a value), so convert only the
    variables that the expressions read, and once. Python mappings, lists, tuples, str, int, float,
    bool and None become CEL maps, lists, strings, ints, doubles, bools and null; results come
    back the same way.
    """
    try:
        context: cel.Context = _cel().Context(dict(values))
    except Exception as exc:
        raise CelError(f"cannot convert a value to CEL: {exc}") from exc
    return context


def only(args: Any, keys: frozenset[str] | None) -> Any:
    """The part of ``args`` an expression reads: an agent's 1 MB argument costs nothing to a
    condition on another one."""
    if keys is None or not isinstance(args, Mapping):
        return args
    return {key: args[key] for key in keys if key in args}


def _arg_keys(source: str) -> frozenset[str] | None:
    strings = [match.span() for match in _NOT_CODE.finditer(source)]
    keys: set[str] = set()
    for match in _ARGS.finditer(source):
        if (match.start() > 0 and source[match.start() - 1] == ".") or _inside(match.start(), strings):
            continue
        access = _ARG_ACCESS.match(source, match.end())
        if access is None:
            return None
        keys.add(next(group for group in access.groups() if group is not None))
    return frozenset(keys)


def _inside(index: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= index < end for start, end in spans)


@cache
def _cel() -> Any:
    # `import cel` also imports the library's command line (typer, rich, prompt_toolkit: about
    # 150 ms), so it is imported on first use: policies without CEL, and `import gateway.config`,
    # never pay for it.
    return importlib.import_module("cel")


def compile_message(raw: str) -> str:
    """The library's multi-line parse error as one line: position first, then the first complaint."""
    text = raw.split(": ERROR: ", 1)[-1]
    first = text.split("\n", 1)[0]
    match = _POSITION.match(first)
    if match is None:
        return f"invalid CEL: {first}"
    line, column = match.groups()
    what = first[match.end() :].removeprefix("Syntax error: ")
    return f"invalid CEL at line {line}, column {column}: {what}"


def runtime_message(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]!r} (test it first with has(), e.g. has(args.x) && args.x > 1)"
    text = str(exc).split(". Check ", 1)[0]
    return text.split(". CEL does not coerce", 1)[0]


def _comprehension_depth(masked: str) -> int:
    opens = {match.end() - 1 for match in _MACRO_OPEN.finditer(masked)}
    stack: list[bool] = []
    depth = deepest = 0
    for index, char in enumerate(masked):
        if char == "(":
            is_macro = index in opens
            stack.append(is_macro)
            depth += is_macro
            deepest = max(deepest, depth)
        elif char == ")" and stack:
            depth -= stack.pop()
    return deepest


def _unknown_message(unknown: list[str], variables: Collection[str]) -> str:
    name = unknown[0]
    message = f"unknown variable {name!r} (available: {', '.join(variables)})"
    guess = get_close_matches(name, list(variables), n=1)
    return f"{message}; did you mean {guess[0]!r}?" if guess else message
