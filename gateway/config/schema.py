"""The JSON Schemas of servers.toml and of policy files, generated from the models.

Editors with a TOML language server (Taplo, Even Better TOML) use them to complete and check the
files as they are typed (a ``#:schema`` line at the top of a file points at one). The committed
copies are written by ``python -m gateway.pipeline.schema`` (a policy file's keys come from the
pipeline's units), and a test fails when one drifts.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.config.models import LOADER_FIELDS, Config
from gateway.config.policy_models import PolicyModels


def servers_schema() -> dict[str, Any]:
    """The schema of the file as written (after ``${VAR}`` interpolation), without loader-set fields."""
    schema = Config.model_json_schema(mode="validation")
    for name in LOADER_FIELDS:
        schema["properties"].pop(name, None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Interlock servers.toml"
    schema["description"] = "Upstream MCP servers and gateway settings. See docs/configuration.md."
    return schema


def policy_schema(models: PolicyModels) -> dict[str, Any]:
    """The schema of one ``policies/*.toml`` file.

    A rule's settings are optional ("not set": the value before it holds), which pydantic writes
    as ``anyOf [..., null]``; TOML has no null, so those members are dropped.
    """
    schema: dict[str, Any] = _without_null(models.file.model_json_schema(mode="validation"))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Interlock policy file (policies/*.toml)"
    schema["description"] = "[defaults] and [[rules]] of the guards. See docs/policies.md."
    return schema


def _without_null(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: _without_null(value) for key, value in node.items() if not (key == "default" and value is None)
    }
    members = out.get("anyOf")
    if isinstance(members, list) and {"type": "null"} in members:
        rest = [m for m in members if m != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1:
            out = {**rest[0], **out}
        else:
            out["anyOf"] = rest
    return out


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
