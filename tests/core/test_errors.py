"""The error set is closed: every class has a unique code and renders on its plane."""

from __future__ import annotations

import json

import pytest
from mcp.shared.exceptions import MCPError

from gateway.core.errors import ALL_ERRORS, GatewayError
from gateway.downstream.render import render


def test_every_code_is_unique() -> None:
    codes = [cls.code for cls in ALL_ERRORS]
    assert len(codes) == len(set(codes)), codes


def test_every_error_class_is_listed() -> None:
    def subclasses(cls: type[GatewayError]) -> set[type[GatewayError]]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    assert subclasses(GatewayError) <= set(ALL_ERRORS)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.code)
def test_every_error_renders(cls: type[GatewayError]) -> None:
    err = cls("something happened", retry_after_s=2.0 if cls.retryable else None)
    if cls.plane == "protocol":
        with pytest.raises(MCPError) as caught:
            render(err, server="crm", tool="crm__x", request_id="r1")
        assert caught.value.error.data["error"]["code"] == cls.code
        return
    result = render(err, server="crm", tool="crm__x", request_id="r1")
    assert result["isError"] is True
    body = result["structuredContent"]["error"]
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    assert set(body) == {
        "code",
        "message",
        "retryable",
        "retry_after_s",
        "hint",
        "details",
        "server",
        "tool",
        "request_id",
    }
    assert body["code"] == cls.code and body["hint"] and body["retryable"] is cls.retryable


def test_an_unknown_exception_hides_its_traceback() -> None:
    result = render(ValueError("secret stack detail"), server="crm", tool="t", request_id="abc123")
    text = result["content"][0]["text"]
    assert "secret stack detail" not in text
    assert result["structuredContent"]["error"]["code"] == "internal_error"
    assert "abc123" in result["structuredContent"]["error"]["message"]
