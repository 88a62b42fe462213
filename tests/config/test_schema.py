from __future__ import annotations

import tomllib
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from gateway.config.interpolate import interpolate
from gateway.config.schema import servers_schema
from gateway.pipeline.schema import REGENERATE, SCHEMA_PATH, main, render

from .test_loader import EXAMPLE, EXAMPLE_ENV, FULL, FULL_ENV


def test_committed_schema_is_up_to_date() -> None:
    committed = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else "<missing>"
    assert committed == render(), (
        f"{SCHEMA_PATH} is out of date with gateway/config/models.py; run `{REGENERATE}`"
    )


def test_check_mode_agrees() -> None:
    assert main(["--check"]) == 0


def test_loader_fields_are_not_in_the_schema() -> None:
    assert set(servers_schema()["properties"]) == {"gateway", "admin", "approvals", "servers"}


def document(text: str, env: dict[str, str]) -> Any:
    # The schema describes values after interpolation, which is what editors see for literals.
    return interpolate(tomllib.loads(text), env).data


@pytest.mark.parametrize(("text", "env"), [(EXAMPLE, EXAMPLE_ENV), (FULL, FULL_ENV)])
def test_valid_files_match_the_schema(text: str, env: dict[str, str]) -> None:
    Draft202012Validator(servers_schema()).validate(document(text, env))


@pytest.mark.parametrize(
    "data",
    [
        {"servers": {"a": {"transport": "ftp"}}},
        {"servers": {"a b": {"transport": "stdio", "command": "x"}}},
        {"servers": {"a": {"transport": "stdio", "command": "x", "timout_s": 1}}},
        {"gateway": {"port": 70000}},
        {"source": "x"},
    ],
)
def test_schema_rejects(data: dict[str, Any]) -> None:
    assert list(Draft202012Validator(servers_schema()).iter_errors(data))
