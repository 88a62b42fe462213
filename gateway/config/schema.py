"""The JSON Schema of servers.toml, generated from the models and committed.

Editors with a TOML language server (Taplo, Even Better TOML) use it to complete and check
servers.toml as it is typed. A test fails when the committed copy drifts from the models.

    python -m gateway.config.schema           # rewrite schemas/servers.schema.json
    python -m gateway.config.schema --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.config.models import LOADER_FIELDS, Config

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "servers.schema.json"
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


def render() -> str:
    return json.dumps(servers_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    text = render()
    if "--check" in args:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is out of date; run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
