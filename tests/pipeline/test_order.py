"""The pipeline's order is written down once in code, once here, and once in the architecture notes."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.pipeline import GUARD_NAMES, POLICIES, STAGES, UNITS

ROOT = Path(__file__).resolve().parents[2]

ORDER = [
    "traits",
    "resolve",
    "rewrite",
    "reminders",
    "result_size_cap",
    "output_validation",
    "access",
    "pinning",
    "loops",
    "rate_limits",
    "argument_validation",
    "references",
    "approval",
    "retry",
    "breaker",
    "concurrency",
    "timeout",
    "classify",
]
"""Changing the order is a design decision: change it here, in ``gateway/pipeline/order.py`` and in
the diagram of docs/architecture.md, with the reason on its line in ``order.py``."""


def test_the_order_is_the_one_written_down() -> None:
    assert [stage.name for stage in STAGES] == ORDER


def test_the_architecture_diagram_shows_the_same_order() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- pipeline order -->\n```\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/architecture.md lost its pipeline diagram"
    shown = [name.strip() for name in block[1].replace("\n", " ").split("→")]
    assert shown == [*GUARD_NAMES, "upstream"]
    settings_only = [stage.name for stage in STAGES if stage.build is None]
    assert settings_only == ["traits"]
    assert "traits" in text, "the settings-only stage is named next to the diagram"


def test_every_unit_belongs_to_its_stage_and_every_key_to_one_unit() -> None:
    assert [unit.name for unit in UNITS] == [stage.name for stage in STAGES if stage.unit is not None]
    owners: dict[str, str] = {}
    for unit in UNITS:
        for key in unit.keys:
            assert key not in owners, f"{key} is owned by {owners[key]} and {unit.name}"
            owners[key] = unit.name
    assert set(owners) == set(POLICIES.models.keys)


def test_the_policy_schema_names_every_key_each_unit_declares() -> None:
    schema = POLICIES.models.body.model_json_schema()
    assert set(schema["properties"]) == {key for unit in UNITS for key in unit.keys}
    assert all(prop.get("description") for prop in schema["properties"].values())
