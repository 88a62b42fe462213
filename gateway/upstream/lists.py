"""Sanitising what an upstream lists: one malformed entry loses only itself.

The SDK's typed ``list_tools`` raises for the whole page when one tool is malformed; the gateway
checks entries one by one and keeps the rest, with a warning naming the server and the entry.
"""

from __future__ import annotations

import logging
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ValidationError

log = logging.getLogger("interlock.upstream")


def _valid(server: str, kind: str, model: type[BaseModel], raw: dict[str, Any], label: str) -> bool:
    try:
        model.model_validate(raw, by_name=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        log.warning(
            "%s: %s %r is malformed and is not listed (%s: %s)", server, kind, label, where, first["msg"]
        )
        return False
    return True


def valid_tools(server: str, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for tool in raw:
        name = tool.get("name")
        label = name if isinstance(name, str) else repr(name)[:40]
        schema = tool.get("inputSchema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            log.warning(
                "%s: tool %r is malformed and is not listed (inputSchema must be an object schema)",
                server,
                label,
            )
            continue
        if not _valid(server, "tool", types.Tool, tool, label):
            continue
        if label in seen:
            log.warning("%s: tool %r is listed twice; the first definition is kept", server, label)
            continue
        seen.add(label)
        out.append(tool)
    return out


def valid_prompts(server: str, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in raw if _valid(server, "prompt", types.Prompt, p, str(p.get("name")))]


def valid_resources(server: str, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in raw if _valid(server, "resource", types.Resource, r, str(r.get("uri")))]


def valid_templates(server: str, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        t
        for t in raw
        if _valid(server, "resource template", types.ResourceTemplate, t, str(t.get("uriTemplate")))
    ]
