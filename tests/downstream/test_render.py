"""The renderer's tool-plane shape: where the error goes, with and without an outputSchema."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from gateway.core.errors import ALL_ERRORS, GatewayError, InvalidArguments
from gateway.downstream.render import ERROR_META_KEY, render

CUSTOMER = {
    "type": "object",
    "properties": {"customer_id": {"type": "string"}, "name": {"type": "string"}},
    "required": ["customer_id", "name"],
}
TOOL_PLANE = [cls for cls in ALL_ERRORS if cls.plane == "tool"]


@pytest.mark.parametrize("cls", TOOL_PLANE, ids=lambda c: c.code)
def test_a_tool_with_an_output_schema_gets_the_error_in_text_and_meta_only(cls: type[GatewayError]) -> None:
    err = cls("it failed", retry_after_s=2.5 if cls.retryable else None)
    result = render(err, server="crm", tool="crm__get_customer", request_id="r1", output_schema=CUSTOMER)
    assert "structuredContent" not in result
    error = result["_meta"][ERROR_META_KEY]
    assert json.loads(result["content"][0]["text"]) == {"error": error}
    assert (error["code"], error["retry_after_s"], error["request_id"]) == (
        cls.code,
        2.5 if cls.retryable else None,
        "r1",
    )


def test_a_tool_without_an_output_schema_keeps_structured_content() -> None:
    result = render(InvalidArguments("bad"), server="crm", tool="t", request_id="r1")
    assert result["structuredContent"] == {"error": result["_meta"][ERROR_META_KEY]}
    assert result["isError"] is True


def test_every_copy_is_plain_json_even_when_details_are_not() -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    err = InvalidArguments("bad", details={"at": when})
    result = render(err, server="crm", tool="t", request_id="r1")
    text = json.loads(result["content"][0]["text"])
    assert text == result["structuredContent"] == {"error": result["_meta"][ERROR_META_KEY]}
    assert result["_meta"][ERROR_META_KEY]["details"] == {"at": str(when)}


def test_blocks_the_guards_add_follow_the_error() -> None:
    err = InvalidArguments("bad")
    err.extra_content.append({"type": "text", "text": "Reminder: be kind."})
    result = render(err, server="crm", tool="t", request_id="r1", output_schema=CUSTOMER)
    assert [b["text"][:9] for b in result["content"]] == ['{"error":', "Reminder:"]
