"""Write (or check) the committed JSON Schemas of servers.toml and of policy files.

    python -m gateway.pipeline.schema           # rewrite schemas/*.schema.json
    python -m gateway.pipeline.schema --check   # exit 1 if one is out of date

The policy schema lives here rather than in ``gateway.config`` because its keys are the units of
this pipeline's stages.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.config.schema import dump, servers_schema
from gateway.config.schema import policy_schema as schema_of
from gateway.pipeline.policies import POLICIES

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_PATH = SCHEMAS_DIR / "servers.schema.json"
POLICY_SCHEMA_PATH = SCHEMAS_DIR / "policy.schema.json"
REGENERATE = "python -m gateway.pipeline.schema"


def policy_schema() -> dict[str, Any]:
    return schema_of(POLICIES.models)


def render() -> str:
    return dump(servers_schema())


def render_policy() -> str:
    return dump(policy_schema())


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
