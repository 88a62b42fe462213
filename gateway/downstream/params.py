"""Malformed request params, explained: which field is wrong and what it should be.

The SDK answers every params validation failure with ``-32602 "Invalid request parameters"`` and
empty ``data``, on purpose (no pydantic text on the wire). An agent cannot correct a call from
that, and models often send ``arguments`` as JSON text instead of an object. This server
middleware keeps the code and names the fields, in JSON terms, without echoing the input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.context import HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import ValidationError
from pydantic_core import ErrorDetails

Ctx = ServerRequestContext[Any, Any]

_MAX_PROBLEMS = 5
_EXPECTED = {
    "missing": "is required",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be an array",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be a boolean",
}


async def explain_invalid_params(
    ctx: Ctx, call_next: Callable[[Ctx], Awaitable[HandlerResult]]
) -> HandlerResult:
    """Server middleware: turn the SDK's request validation failure into a ``-32602`` that says why."""
    try:
        return await call_next(ctx)
    except ValidationError as exc:
        # Only the request surface models: a ValidationError from deeper down is not the caller's.
        if not exc.title.endswith(("Request", "RequestParams")):
            raise
        problems = _problems(exc.errors(include_url=False, include_input=True))
        text = "; ".join(f"{p['path']} {p['problem']}" for p in problems)
        data = {"method": ctx.method, "errors": problems}
        raise MCPError(
            code=INVALID_PARAMS, message=f"Invalid params for {ctx.method}: {text}.", data=data
        ) from None


def _problems(errors: list[ErrorDetails]) -> list[dict[str, str]]:
    seen: dict[str, str] = {}
    for error in errors:
        path = _path(error["loc"])
        if path in seen:
            continue  # a union reports each member it tried; the first says enough
        seen[path] = _problem(error)
        if len(seen) == _MAX_PROBLEMS:
            break
    return [{"path": path, "problem": problem} for path, problem in seen.items()]


def _path(loc: tuple[int | str, ...]) -> str:
    """``params.arguments``; union member tags (``str``, ``int``, ...) that pydantic adds are dropped."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part in ("str", "int", "float", "bool") or "[" in part:
            break
        else:
            parts.append(("." if parts else "") + part)
    return "".join(parts) or "params"


def _problem(error: ErrorDetails) -> str:
    problem = _EXPECTED.get(error["type"], error["msg"])
    if _path(error["loc"]).endswith(".arguments") and isinstance(error.get("input"), str):
        problem += " (it is a string: send the arguments as a JSON object, not as JSON text)"
    return problem
