"""The JSON Schemas of servers.toml and of policy files, generated from the models and committed.

Editors with a TOML language server (Taplo, Even Better TOML) use them to complete and check the
files as they are typed (a ``#:schema`` line at the top of a file points at one). A test fails when
a committed copy drifts from the models.

    python -m gateway.config.schema           # rewrite schemas/*.schema.json
    python -m gateway.config.schema --check   # exit 1 if one is out of date
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.config.models import LOADER_FIELDS, Config
from gateway.config.policy_models import PolicyFile

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_PATH = SCHEMAS_DIR / "servers.schema.json"
POLICY_SCHEMA_PATH = SCHEMAS_DIR / "policy.schema.json"
REGENERATE = "python -m gateway.config.schema"


def servers_schema() -> dict[str, Any]:
    """The schema of the file as written (after ``${VAR}`` interpolation), without loader-set fields."""
    schema = Config.model_json_schema(mode="validation")
    for name in LOADER_FIELDS:
        schema["properties"].pop(name, None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Interlock servers.toml"
    schema["description"] = "Upstream MCP servers and gateway settings. See docs/configuration.md."
    return schema


def policy_schema() -> dict[str, Any]:
    """The schema of one ``policies/*.toml`` file.

    A rule's settings are optional ("not set": the value before it holds), which pydantic writes
    as ``anyOf [..., null]``; TOML has no null, so those members are dropped.
    """
    schema: dict[str, Any] = _without_null(PolicyFile.model_json_schema(mode="validation"))
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


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render() -> str:
    return _dump(servers_schema())


def render_policy() -> str:
    return _dump(policy_schema())


SCHEMAS: dict[Path, Callable[[], str]] = {SCHEMA_PATH: render, POLICY_SCHEMA_PATH: render_policy}


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if "--check" in args:
        stale = [path for path, make in SCHEMAS.items() if _current(path) != make()]
        for path in stale:
            print(f"{path} is out of date; run `{REGENERATE}`", file=sys.stderr)
        return 1 if stale else 0
    SCHEMAS_DIR.mkdir(parents=True, exist_ok=True)
    for path, make in SCHEMAS.items():
        path.write_text(make(), encoding="utf-8")
        print(f"wrote {path}")
    return 0


def _current(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


if __name__ == "__main__":
    raise SystemExit(main())
