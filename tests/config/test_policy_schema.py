"""schemas/policy.schema.json: generated from the models, committed, and kept in step."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from gateway.pipeline import schema
from gateway.pipeline.schema import POLICY_SCHEMA_PATH, REGENERATE, policy_schema, render_policy

from .test_policy_loader import DEFAULT_TOML, EXAMPLE_TOML


def test_committed_policy_schema_is_up_to_date() -> None:
    committed = POLICY_SCHEMA_PATH.read_text(encoding="utf-8") if POLICY_SCHEMA_PATH.exists() else "<missing>"
    assert committed == render_policy(), (
        f"{POLICY_SCHEMA_PATH} is out of date with gateway/config/policy_models.py; run `{REGENERATE}`"
    )


def test_check_mode_covers_the_policy_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "policy.schema.json"
    stale.write_text("{}\n", encoding="utf-8")
    monkeypatch.setattr(schema, "SCHEMAS", {stale: render_policy})
    assert schema.main(["--check"]) == 1
    monkeypatch.setattr(schema, "SCHEMAS_DIR", tmp_path)
    assert schema.main([]) == 0
    assert schema.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == render_policy()


def test_no_null_in_a_toml_schema() -> None:
    assert '"null"' not in render_policy()


@pytest.mark.parametrize("path", [DEFAULT_TOML, EXAMPLE_TOML])
def test_shipped_files_match_the_schema(path: Path) -> None:
    Draft202012Validator(policy_schema()).validate(tomllib.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "data",
    [
        {"defaults": {"timout_s": 1}},
        {"rules": [{"access": "deny"}]},
        {"rules": [{"name": "r", "access": "block"}]},
        {"rules": [{"name": "r", "hints": {"nope": "x"}}]},
        {"rules": [{"name": "r", "error_patterns": [{"code": "internal_error", "pattern": "x"}]}]},
        {"rules": [{"name": "r", "match": {"tools": []}}]},
        {"rules": [{"name": "r", "approve": True}]},
    ],
)
def test_schema_rejects(data: dict[str, Any]) -> None:
    assert list(Draft202012Validator(policy_schema()).iter_errors(data))


def test_schema_is_valid_json_schema() -> None:
    Draft202012Validator.check_schema(json.loads(render_policy()))
