"""The gateway's error results, as any client must be able to read them.

Every example tool declares an ``outputSchema``, and a client may validate ``structuredContent``
against it even when ``isError`` is set (the MCP Inspector does, and then shows only the schema
violation). So a gateway error must never put into ``structuredContent`` what the schema does
not allow, and its code, hint and ``retry_after_s`` must still reach the client: in the text
block and in ``_meta["interlock/error"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import mcp_types as types
import pytest
from jsonschema.validators import validator_for
from mcp import Client

from tests.support import FIXTURE_SERVER, ROOT, Proc, gateway, gateway_error, stdio_server_toml

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "default"]
EXAMPLES = ("crm", "jobs", "flaky")

POLICY = """
[[rules]]
name = "one-echo-an-hour"
match = { tools = ["fs__echo"] }
rate_limits = [ { name = "one-echo", limit = 1, period_s = 3600, burst = 1, key = ["tool"] } ]
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("error-shape")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "default.toml").write_text((ROOT / "policies" / "default.toml").read_text())
    (tmp / "policies" / "50-test.toml").write_text(POLICY)
    examples = "".join(
        # The flaky API answers every trade "429 Too Many Requests; Retry-After: 2".
        stdio_server_toml(sid, str(ROOT / "examples" / f"{sid}_server.py"), extra=extra)
        for sid, extra in [("crm", ""), ("jobs", ""), ("flaky", 'env = { FLAKY_MODE = "429" }')]
    )
    with gateway(examples + stdio_server_toml("fs", FIXTURE_SERVER, "--name", "fs"), tmp) as proc:
        yield proc


def _client(gw: Proc, era: str) -> Client:
    return Client(gw.mcp_url, mode="legacy") if era == "legacy" else Client(gw.mcp_url)


def _assert_fits_schema(result: types.CallToolResult, tool: types.Tool) -> None:
    """What a validating client checks: structuredContent, if any, against the outputSchema."""
    if tool.output_schema is None or result.structured_content is None:
        return
    schema = tool.output_schema
    errors = list(validator_for(schema)(schema).iter_errors(result.structured_content))
    assert not errors, f"{tool.name}: {[e.message for e in errors]}"


@pytest.mark.parametrize("era", ERAS)
async def test_invalid_arguments_on_every_example_tool_fit_its_output_schema(gw: Proc, era: str) -> None:
    with anyio.fail_after(60):
        async with _client(gw, era) as c:
            tools = [t for t in (await c.list_tools()).tools if t.name.split("__")[0] in EXAMPLES]
            assert len(tools) == 8 and all(t.output_schema for t in tools), [t.name for t in tools]
            for tool in tools:
                # Every example tool has a required argument: none given is invalid. The extra
                # key keeps the two eras' calls apart (the same failing call repeated is a loop).
                result = await c.call_tool(tool.name, {"zz_era": era})
                error = gateway_error(result)
                assert error["code"] == "invalid_arguments", error
                assert error["hint"].startswith("Fix these arguments and call again:"), error
                assert error["tool"] == tool.name and error["details"]["violations"], error
                _assert_fits_schema(result, tool)


@pytest.mark.parametrize("era", ERAS)
async def test_an_upstream_429_keeps_its_retry_after(gw: Proc, era: str) -> None:
    with anyio.fail_after(30):
        async with _client(gw, era) as c:
            tool = next(t for t in (await c.list_tools()).tools if t.name == "flaky__place_order")
            qty = 1 if era == "legacy" else 2
            result = await c.call_tool(tool.name, {"symbol": "ACME", "qty": qty})
    error = gateway_error(result)
    assert (error["code"], error["retryable"], error["retry_after_s"]) == ("upstream_rate_limited", True, 2.0)
    assert "slow down" in error["hint"]
    _assert_fits_schema(result, tool)


@pytest.mark.parametrize("era", ERAS)
async def test_the_gateways_own_rate_limit_says_how_long_to_wait(gw: Proc, era: str) -> None:
    with anyio.fail_after(30):
        async with _client(gw, era) as c:
            tool = next(t for t in (await c.list_tools()).tools if t.name == "fs__echo")
            assert tool.output_schema is not None
            for attempt in range(2):  # one echo an hour, shared by both eras' tests
                result = await c.call_tool(tool.name, {"text": f"{era} {attempt}"})
                if result.is_error:
                    break
    error = gateway_error(result)
    assert error["code"] == "rate_limited" and error["retryable"] is True, error
    assert isinstance(error["retry_after_s"], int | float) and error["retry_after_s"] > 0, error
    assert error["hint"].startswith("Wait retry_after_s seconds"), error
    _assert_fits_schema(result, tool)


@pytest.mark.parametrize("era", ERAS)
async def test_a_tool_without_output_schema_keeps_structured_content(gw: Proc, era: str) -> None:
    with anyio.fail_after(30):
        async with _client(gw, era) as c:
            tool = next(t for t in (await c.list_tools()).tools if t.name == "fs__add")
            assert tool.output_schema is None
            result = await c.call_tool(tool.name, {"a": "one", "b": era})
    error = gateway_error(result)
    assert error["code"] == "invalid_arguments"
    assert result.structured_content == {"error": error}


@pytest.mark.parametrize("era", ERAS)
async def test_a_tool_with_output_schema_gets_no_structured_content(gw: Proc, era: str) -> None:
    """No error object can fit a schema made for data: it goes to the text block and ``_meta``."""
    with anyio.fail_after(30):
        async with _client(gw, era) as c:
            result = await c.call_tool("crm__get_customer", {"customer_id": f"nope-{era}"})
    assert result.structured_content is None
    assert (result.meta or {})["interlock/error"] == gateway_error(result)
    assert result.content[0].type == "text" and '"code":"invalid_arguments"' in result.content[0].text
