"""Read servers.toml into a ``Config``: parse, interpolate ``${ENV}``, validate, resolve paths.

Every problem found is collected before raising, so that an operator fixes a file in one pass
instead of one error per run.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.errors import (
    ConfigError,
    Problem,
    format_path,
    is_secret_loc,
    translate,
    unknown_key_message,
)
from gateway.config.interpolate import interpolate
from gateway.config.models import LOADER_FIELDS, Config, Loc, StdioServer

_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate a servers.toml; raise ``ConfigError`` listing every problem found.

    ``env`` (default: ``os.environ``) supplies the ``${VAR}`` values, over the built-in ones
    (``builtin_variables``).
    """
    file = str(path)
    source = Path(path).expanduser().resolve()
    raw = _parse(file, source)
    env = {**builtin_variables(), **(os.environ if env is None else env)}

    problems: list[tuple[Loc, Problem]] = []
    for key in sorted(LOADER_FIELDS & raw.keys()):
        # Set by the loader from the file's own location; a file claiming them would be lying.
        problems.append(((key,), Problem(key, unknown_key_message(key))))
        del raw[key]

    result = interpolate(raw, env)
    problems.extend((loc, Problem(format_path(loc), message)) for loc, message in result.problems)

    config: Config | None = None
    try:
        config = Config.model_validate(result.data)
    except ValidationError as exc:

        def redact(loc: Loc) -> bool:
            return loc in result.expanded or is_secret_loc(loc)

        for loc, problem in translate(exc, redact=redact):
            # A failed reference already explains this value; its type error would be noise.
            if loc not in result.failed:
                problems.append((loc, problem))
    if problems or config is None:
        # `from None`: a chained pydantic error would print input values, secrets included.
        raise ConfigError(file, _in_document_order(problems, raw)) from None
    return _resolve_paths(config, source)


def builtin_variables() -> dict[str, str]:
    """Variables every servers.toml may use without setting them; the environment may override them.

    ``INTERLOCK_PYTHON``: the interpreter running the gateway, however it was started (a venv's
    ``bin/python``, a container's, ``python -m gateway.cli``), so that Python upstreams find the
    same packages as the gateway without that interpreter on ``PATH``.
    """
    return {"INTERLOCK_PYTHON": sys.executable or "python3"}


def with_overrides(
    config: Config, table: str, values: Mapping[str, Any], *, flags: Mapping[str, str]
) -> Config:
    """``config`` with keys of one top-level table replaced (from the command line, say), validated
    as if the file had said so; a problem names the flag that gave the value (``flags``: key -> flag).
    """
    if not values:
        return config
    data = config.model_dump(exclude=set(LOADER_FIELDS))
    data[table] = {**data[table], **values}
    try:
        checked = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for loc, problem in translate(exc):
            key = loc[1] if len(loc) > 1 and loc[0] == table else None
            flag = flags.get(key) if isinstance(key, str) else None
            problems.append(Problem(flag or problem.path, problem.message))
        raise ConfigError("command line", problems) from None
    return checked.model_copy(update={"source": config.source, "policies_dir": config.policies_dir})


def _parse(file: str, source: Path) -> dict[str, Any]:
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise ConfigError(file, [Problem("", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError(file, [Problem("", "is a directory, not a TOML file")]) from None
    except OSError as exc:
        raise ConfigError(file, [Problem("", f"cannot read the file: {exc.strerror}")]) from None
    return parse_toml(file, data)


def parse_toml(file: str, data: bytes) -> dict[str, Any]:
    """TOML bytes to a dict; bad UTF-8 or syntax is a ``ConfigError`` naming the file and position."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, [Problem("", f"not valid UTF-8 (at byte {exc.start})")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, [_syntax_problem(str(exc), text)]) from None


def _syntax_problem(message: str, text: str) -> Problem:
    """tomllib (3.11) only puts the position in its message: move it to the front, where paths go."""
    match = _TOML_POSITION.search(message)
    if match is None:
        return Problem("", f"invalid TOML: {message}")
    if match[1] is None:
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    else:
        line, column = int(match[1]), int(match[2])
    what = message[: match.start()]
    return Problem(f"line {line}, column {column}", f"invalid TOML: {what[:1].lower()}{what[1:]}")


def _in_document_order(problems: list[tuple[Loc, Problem]], raw: Mapping[str, Any]) -> list[Problem]:
    """Sort problems as their keys appear in the file (a missing key sorts with its table)."""
    order: dict[Loc, int] = {}

    def walk(value: Any, loc: Loc) -> None:
        order[loc] = len(order)
        items = (
            value.items()
            if isinstance(value, Mapping)
            else enumerate(value)
            if isinstance(value, list)
            else ()
        )
        for key, item in items:
            walk(item, (*loc, key))

    walk(raw, ())

    def position(loc: Loc) -> int:
        while loc not in order:
            loc = loc[:-1]
        return order[loc]

    ranked = sorted(problems, key=lambda pair: position(pair[0]))
    return list(dict.fromkeys(problem for _, problem in ranked))


def _resolve_paths(config: Config, source: Path) -> Config:
    """Relative paths in a config file mean relative to that file, not to the process's cwd."""
    base = source.parent
    servers = {
        sid: _stdio_paths(server, base) if isinstance(server, StdioServer) else server
        for sid, server in config.servers.items()
    }
    # model_copy skips validation, which is fine: these are paths we just built from valid ones.
    return config.model_copy(
        update={
            "servers": servers,
            "source": source,
            "policies_dir": _absolute(base, config.gateway.policies),
        }
    )


def _stdio_paths(server: StdioServer, base: Path) -> StdioServer:
    """A stdio server's ``cwd``, path-like ``command`` and path arguments, made absolute.

    The rule (docs/configuration.md, "Paths"): ``cwd`` is always a path. ``command`` is one when it
    contains a ``/`` (a bare name is looked up on ``PATH``). An argument is one when it is relative
    and either starts with ``./`` or ``../``, or names an existing file relative to the config file's
    folder; options (``-x``, ``--flag=value``) and every other word pass unchanged.
    """
    update: dict[str, object] = {"args": [_path_arg(base, arg) for arg in server.args]}
    if server.cwd is not None:
        update["cwd"] = str(_absolute(base, server.cwd))
    if "/" in server.command and not Path(server.command).is_absolute():
        update["command"] = str(_absolute(base, server.command))
    return server.model_copy(update=update)


def _path_arg(base: Path, arg: str) -> str:
    if not arg or arg.startswith("-") or Path(arg).is_absolute():
        return arg
    if arg.startswith(("./", "../")) or _is_file(base / arg):
        return str(_absolute(base, arg))
    return arg


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a long JSON blob or a NUL byte is an argument, not a path
        return False


def _absolute(base: Path, value: str) -> Path:
    return (base / Path(value).expanduser()).resolve()
