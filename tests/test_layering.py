"""Dependencies point downward only; this test reads every import to keep it true."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "gateway"

# A module's layer may import only from the layers listed for it (and itself, and third parties).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "config": {"core"},
    "guards": {"core", "config", "state"},
    "state": {"core", "config"},
    "upstream": {"core", "config"},
    "catalog": {"core", "config"},
    "approvals": {"core", "config", "state", "guards", "upstream"},
    "observe": {"core", "config", "state"},
    "downstream": {"core", "config", "state", "guards", "upstream", "catalog", "approvals", "observe"},
    "web": {"core", "config", "state", "guards", "upstream", "catalog", "approvals", "observe"},
    "workflows": {"core", "config", "state", "guards", "upstream", "catalog", "approvals", "observe"},
    "reload": {"core", "config"},
    "pipeline": {"core", "config", "state", "guards", "upstream", "catalog", "approvals", "observe"},
    "app": {
        "core",
        "config",
        "state",
        "guards",
        "upstream",
        "catalog",
        "approvals",
        "observe",
        "downstream",
        "web",
        "workflows",
        "reload",
        "pipeline",
    },
}
ALLOWED["cli"] = ALLOWED["app"] | {"app"}  # the command line sits on top of everything


def _layer(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py") if rel.parts[0] != "__init__.py" else "package"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gateway."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("gateway.")}
    return found


def test_imports_point_downward() -> None:
    violations = []
    for path in ROOT.rglob("*.py"):
        layer = _layer(path)
        if layer == "package":
            continue
        assert layer in ALLOWED, f"new layer {layer!r}: add it to ALLOWED with its dependencies"
        for target in _imports(path) - {layer}:
            if target not in ALLOWED[layer]:
                violations.append(f"{path.relative_to(ROOT)} imports gateway.{target}")
    assert not violations, violations
