"""Aggregation of every upstream's tools, prompts and resources into one catalog.

Names: a namespaced server's tools and prompts are listed as ``server<sep>name`` and its
resource URIs as ``interlock://server/<original uri>``; a server with ``namespace = false``
keeps its own names and URIs. Tool filters, renames and description overrides apply here.
The catalog is rebuilt when an upstream's lists change, never per request.
"""

from __future__ import annotations

import base64
import difflib
import fnmatch
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config import Config
from gateway.core import Caller, ToolCall

log = logging.getLogger("interlock.catalog")

RESOURCE_PREFIX = "interlock://"


@dataclass(frozen=True, slots=True)
class ToolEntry:
    server: str
    upstream_name: str
    exposed_name: str
    definition: Mapping[str, Any]
    """The tool as listed to agents: exposed name, description override applied."""
    digest: str = ""
    """Hash of the upstream's own definition (name, description, schemas, annotations): the tool's
    version, for validator caches and for pinning."""

    @property
    def annotations(self) -> Mapping[str, Any]:
        ann = self.definition.get("annotations")
        return ann if isinstance(ann, Mapping) else {}

    def call(
        self,
        arguments: Mapping[str, Any],
        caller: Caller,
        request_id: str,
        *,
        meta: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ToolCall:
        """The ``ToolCall`` for calling this tool: one place that knows what a call carries."""
        return ToolCall(
            server=self.server,
            tool=self.upstream_name,
            exposed_name=self.exposed_name,
            arguments=arguments,
            caller=caller,
            request_id=request_id,
            meta=meta,
            annotations=self.annotations,
            extra=extra or {},
            input_schema=self.definition.get("inputSchema"),
            output_schema=self.definition.get("outputSchema"),
            schema_version=self.digest,
        )


@dataclass(frozen=True, slots=True)
class PromptEntry:
    server: str
    upstream_name: str
    definition: Mapping[str, Any]


class InvalidCursor(ValueError):
    pass


class Catalog:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.sep = config.gateway.separator
        self.version = 0
        self.tools: dict[str, ToolEntry] = {}
        self.prompts: dict[str, PromptEntry] = {}
        self.resources: list[dict[str, Any]] = []
        self.templates: list[dict[str, Any]] = []
        self._unprefixed_uris: dict[str, str] = {}

    # -- building --------------------------------------------------------------------------

    def rebuild(self, lists_by_server: Mapping[str, Any]) -> None:
        """Rebuild from each server's current lists (objects with tools/prompts/resources/templates)."""
        tools: dict[str, ToolEntry] = {}
        prompts: dict[str, PromptEntry] = {}
        resources: list[dict[str, Any]] = []
        templates: list[dict[str, Any]] = []
        unprefixed: dict[str, str] = {}
        for sid, cfg in self.config.servers.items():
            lists = lists_by_server.get(sid)
            if lists is None:
                continue
            for raw in lists.tools:
                entry = self._tool_entry(sid, raw)
                if entry is not None:
                    _add_unique(tools, entry.exposed_name, entry, sid, "tool")
            for raw in lists.prompts:
                name = self.expose(sid, str(raw["name"]))
                _add_unique(
                    prompts, name, PromptEntry(sid, raw["name"], {**raw, "name": name}), sid, "prompt"
                )
            for raw in lists.resources:
                resources.append({**raw, "uri": self.expose_uri(sid, raw["uri"])})
                if not cfg.namespace:
                    unprefixed.setdefault(raw["uri"], sid)
            for raw in lists.templates:
                templates.append({**raw, "uriTemplate": self.expose_uri(sid, raw["uriTemplate"])})
        self.tools, self.prompts, self.resources, self.templates = tools, prompts, resources, templates
        self._unprefixed_uris = unprefixed
        self.version += 1

    def _tool_entry(self, sid: str, raw: Mapping[str, Any]) -> ToolEntry | None:
        cfg = self.config.servers[sid]
        name = str(raw["name"])
        if not any(fnmatch.fnmatchcase(name, g) for g in cfg.allow_tools):
            return None
        if any(fnmatch.fnmatchcase(name, g) for g in cfg.deny_tools):
            return None
        exposed = self.expose(sid, cfg.rename.get(name, name))
        definition = {**raw, "name": exposed}
        if name in cfg.descriptions:
            definition["description"] = cfg.descriptions[name]
        return ToolEntry(sid, name, exposed, definition, tool_digest(raw))

    def expose(self, sid: str, name: str) -> str:
        return f"{sid}{self.sep}{name}" if self.config.servers[sid].namespace else name

    def expose_uri(self, sid: str, uri: str) -> str:
        return f"{RESOURCE_PREFIX}{sid}/{uri}" if self.config.servers[sid].namespace else uri

    # -- lookups ---------------------------------------------------------------------------

    def route_uri(self, uri: str) -> tuple[str, str] | None:
        """Map an exposed resource URI back to (server, upstream URI)."""
        if uri.startswith(RESOURCE_PREFIX):
            sid, _, original = uri[len(RESOURCE_PREFIX) :].partition("/")
            cfg = self.config.servers.get(sid)
            if cfg is not None and cfg.namespace and original:
                return sid, original
        if uri in self._unprefixed_uris:
            return self._unprefixed_uris[uri], uri
        unprefixed = [sid for sid, cfg in self.config.servers.items() if not cfg.namespace]
        # A URI from a template of an unprefixed server is not listed; with one such server it is unambiguous.
        return (unprefixed[0], uri) if len(unprefixed) == 1 else None

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Closest tool names, for "did you mean" on an unknown tool."""
        names = list(self.tools)
        hits = [n for n in names if n.endswith(f"{self.sep}{name}")]
        lowered = {n.lower(): n for n in names}
        hits += [
            lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=limit, cutoff=0.5)
        ]
        return list(dict.fromkeys(hits))[:limit]


def tool_digest(raw: Mapping[str, Any]) -> str:
    """A stable hash of what an agent relies on in a tool definition."""
    relevant = {
        k: raw.get(k) for k in ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
    }
    canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _add_unique(target: dict[str, Any], name: str, entry: Any, sid: str, kind: str) -> None:
    existing = target.get(name)
    if existing is not None:
        log.error(
            "config error: %s %r of server %r collides with the one of server %r; only the first is listed",
            kind,
            name,
            sid,
            existing.server,
        )
        return
    target[name] = entry


def paginate(
    items: list[Any], cursor: str | None, page_size: int, version: int
) -> tuple[list[Any], str | None]:
    """Slice a list with the gateway's own opaque cursors."""
    offset = 0
    if cursor:
        try:
            state = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())
            offset = int(state["o"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCursor("invalid cursor") from exc
        if offset < 0:
            raise InvalidCursor("invalid cursor")
    page = items[offset : offset + page_size]
    end = offset + len(page)
    if end >= len(items):
        return page, None
    token = base64.urlsafe_b64encode(json.dumps({"o": end, "v": version}).encode()).decode()
    return page, token
