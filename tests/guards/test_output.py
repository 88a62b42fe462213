"""Output validation enforces outputSchema by mode; the size cap cuts results with a note."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from gateway.core import Caller, ManualClock, ToolCall, ToolResult, build_chain
from gateway.core.errors import InvalidOutput
from gateway.core.policy import Mode
from gateway.guards.output import (
    ERROR_FLOOR_BYTES,
    TRUNCATION_HINT,
    OutputSettings,
    OutputValidation,
    ResultSizeCap,
    SizeCap,
    json_size,
)
from gateway.guards.schemas import SchemaCache
from gateway.guards.validation import ArgumentValidation
from tests.calls import policy_of

pytestmark = pytest.mark.anyio

OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"total": {"type": "number"}, "currency": {"type": "string", "enum": ["EUR", "USD"]}},
    "required": ["total"],
}
GOOD = ToolResult.of_json({"total": 12.5, "currency": "EUR"})
BAD = ToolResult.of_json({"total": "12.5", "currency": "GBP"})


def _call(
    *, mode: Mode = "warn", max_bytes: int | None = None, schema: Mapping[str, Any] | None = OUTPUT_SCHEMA
) -> ToolCall:
    return ToolCall(
        server="shop",
        tool="get_total",
        exposed_name="shop__get_total",
        arguments={},
        caller=Caller(principal="agent", session_key="s1"),
        request_id="r1",
        output_schema=schema,
        schema_version="v1",
        policy=policy_of(output_validation=OutputSettings(mode), result_size_cap=SizeCap(max_bytes)),
    )


def _returning(result: ToolResult) -> Any:
    async def upstream(call: ToolCall) -> ToolResult:
        return result

    return upstream


async def test_valid_output_passes_unnoted() -> None:
    chain = build_chain([OutputValidation(clock=ManualClock())], _returning(GOOD))
    assert (await chain(_call(mode="block"))).notes == ()


async def test_warn_mode_notes_and_logs_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    chain = build_chain([OutputValidation(clock=clock)], _returning(BAD))
    with caplog.at_level(logging.WARNING, logger="interlock.guards.output"):
        first = await chain(_call())
        second = await chain(_call())
        clock.advance(61)
        await chain(_call())
    assert first.notes == second.notes == ("invalid_output",)
    assert first.raw == BAD.raw  # the agent still gets the output
    warnings = [r for r in caplog.records if r.name == "interlock.guards.output"]
    assert len(warnings) == 2
    assert "GBP" not in warnings[0].getMessage()  # values stay out of the logs


async def test_block_mode_raises_with_every_violation() -> None:
    chain = build_chain([OutputValidation(clock=ManualClock())], _returning(BAD))
    with pytest.raises(InvalidOutput) as caught:
        await chain(_call(mode="block"))
    found = {v["pointer"]: v for v in caught.value.details["violations"]}
    assert found["/structuredContent/total"]["expected"] == "a number"
    assert found["/structuredContent/currency"]["allowed"] == ["EUR", "USD"]
    assert "shop__get_total" in caught.value.message


async def test_missing_structured_content_is_invalid_when_a_schema_exists() -> None:
    chain = build_chain([OutputValidation(clock=ManualClock())], _returning(ToolResult.of_text("12.5")))
    with pytest.raises(InvalidOutput) as caught:
        await chain(_call(mode="block"))
    assert caught.value.details["violations"][0]["pointer"] == "/structuredContent"


@pytest.mark.parametrize(
    ("mode", "schema", "result"),
    [
        ("off", OUTPUT_SCHEMA, BAD),
        ("block", None, BAD),
        ("block", OUTPUT_SCHEMA, ToolResult.of_text("boom", is_error=True)),
        ("block", OUTPUT_SCHEMA, ToolResult({"resultType": "input_required", "inputRequests": {}})),
    ],
)
async def test_not_checked(mode: Mode, schema: Mapping[str, Any] | None, result: ToolResult) -> None:
    chain = build_chain([OutputValidation(clock=ManualClock())], _returning(result))
    assert (await chain(_call(mode=mode, schema=schema))).notes == ()


async def test_input_and_output_share_one_cache_compiling_each_once() -> None:
    cache = SchemaCache()
    chain = build_chain([OutputValidation(cache, ManualClock()), ArgumentValidation(cache)], _returning(GOOD))
    call = _call().with_changes(input_schema={"type": "object"})
    for _ in range(3):
        await chain(call)
    assert cache.compilations == 2 and cache.hits == 4


async def test_an_unusable_output_schema_is_skipped() -> None:
    chain = build_chain([OutputValidation(clock=ManualClock())], _returning(BAD))
    result = await chain(_call(mode="block", schema={"type": "decimal"}))
    assert result.notes == ("schema_skipped",)


def _note(result: ToolResult) -> dict[str, Any]:
    note: dict[str, Any] = json.loads(result.content[-1]["text"])["truncated"]
    return note


@pytest.mark.parametrize("result", [GOOD, ToolResult.of_text("plain text " * 100)])
async def test_a_result_under_the_cap_is_untouched(result: ToolResult) -> None:
    chain = build_chain([ResultSizeCap()], _returning(result))
    assert await chain(_call(max_bytes=10_000)) is result


async def test_text_with_escapes_is_measured_exactly_near_the_cap() -> None:
    text = ToolResult.of_text("\u0001" * 100 + "é" * 100)
    size = json_size(text.raw)
    assert await build_chain([ResultSizeCap()], _returning(text))(_call(max_bytes=size)) is text
    cut = await build_chain([ResultSizeCap()], _returning(text))(_call(max_bytes=size - 1))
    assert cut.notes == ("result_truncated",)


async def test_an_oversized_result_is_cut_with_a_structured_note() -> None:
    blocks = [
        {"type": "text", "text": "a" * 300},
        {"type": "text", "text": "b" * 5000},
        {"type": "image", "data": "AAAA", "mimeType": "image/png"},
    ]
    original = ToolResult({"content": blocks, "_meta": {"trace": "t1"}})
    chain = build_chain([ResultSizeCap()], _returning(original))
    result = await chain(_call(max_bytes=2000))
    assert result.notes == ("result_truncated",)
    assert json_size(result.raw) <= 2000
    content = result.content
    assert content[0] == blocks[0]  # whole blocks are kept while they fit
    assert set(content[1]["text"]) == {"b", "…"} and len(content[1]["text"]) > 1000  # the last one is cut
    assert len(content) == 3  # the image was dropped; the note was added
    assert result.raw["_meta"] == {"trace": "t1"}
    note = _note(result)
    assert note["original_bytes"] == json_size(original.raw)
    assert note["kept_bytes"] == json_size({**result.raw, "content": content[:-1]})
    assert note["dropped_blocks"] == 1
    assert note["hint"] == TRUNCATION_HINT


async def test_structured_content_too_big_on_its_own_is_dropped() -> None:
    big = {"rows": [{"id": i, "name": "x" * 50} for i in range(100)]}
    chain = build_chain([ResultSizeCap()], _returning(ToolResult.of_json(big)))
    result = await chain(_call(max_bytes=3000))
    assert "structuredContent" not in result.raw
    assert _note(result)["structured_content_dropped"] is True
    assert json_size(result.raw) <= 3000


async def test_structured_content_that_fits_is_kept_and_text_is_cut() -> None:
    small = {"count": 3}
    raw = {"content": [{"type": "text", "text": "é" * 3000}], "structuredContent": small}
    chain = build_chain([ResultSizeCap()], _returning(ToolResult(raw)))
    result = await chain(_call(max_bytes=1500))
    assert result.raw["structuredContent"] == small
    assert json_size(result.raw) <= 1500
    assert result.content[0]["text"].endswith("…")


async def test_error_results_keep_a_useful_floor_and_input_required_is_never_cut() -> None:
    error = ToolResult.of_text("stack trace " * 300, is_error=True)
    assert 1000 < json_size(error.raw) <= ERROR_FLOOR_BYTES
    chain = build_chain([ResultSizeCap()], _returning(error))
    assert (await chain(_call(max_bytes=500))) == error
    huge_error = ToolResult.of_text("x" * 10_000, is_error=True)
    cut = await build_chain([ResultSizeCap()], _returning(huge_error))(_call(max_bytes=500))
    assert cut.is_error and ERROR_FLOOR_BYTES - 500 < json_size(cut.raw) <= ERROR_FLOOR_BYTES
    pending = ToolResult({"resultType": "input_required", "requestState": "s" * 5000, "inputRequests": {}})
    assert await build_chain([ResultSizeCap()], _returning(pending))(_call(max_bytes=500)) == pending
