"""Every refusal names its guard, end to end: in the error an agent reads, in the metrics an
operator scrapes; and a condition on arguments is judged only where there are arguments."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client

from tests.support import FIXTURE_SERVER, gateway, gateway_error, http_get, stdio_server_toml

pytestmark = pytest.mark.anyio

POLICY = """
[[rules]]
name = "no-adding"
match = { tools = ["fx__add"] }
access = "deny"

[[rules]]
name = "few-echoes"
match = { tools = ["echo"] }
rate_limits = [{ name = "echoes", limit = 2, period_s = 3600, burst = 2 }]
arguments = { text = { max_length = 10 } }

[[rules]]
name = "big-failures"
match = { tools = ["fail"] }
when = "args.amount > 100"
pinning = "block"
"""


async def test_refusals_name_their_guard_and_a_condition_on_args_waits_for_a_call(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "rules.toml").write_text(POLICY)
    config = '[gateway]\npolicies = "policies"\n' + stdio_server_toml("fx", FIXTURE_SERVER, "--name", "fx")
    with gateway(config, tmp_path) as gw:
        with anyio.fail_after(30):
            async with Client(gw.mcp_url) as client:
                await client.list_tools()
                assert "`when` failed" not in gw.log(), "listing the tools evaluated a call's condition"
                denied = gateway_error(await client.call_tool("fx__add", {"a": 1, "b": 2}))
                invalid = gateway_error(await client.call_tool("fx__echo", {"text": "far too long for it"}))
                assert not (await client.call_tool("fx__echo", {"text": "one"})).is_error
                limited = gateway_error(await client.call_tool("fx__echo", {"text": "two"}))
                failed = gateway_error(await client.call_tool("fx__fail", {"kind": "500"}))
        _, metrics = http_get(f"{gw.url}/metrics")
    assert (denied["code"], denied["details"]["guard"]) == ("forbidden", "access")
    assert (invalid["code"], invalid["details"]["guard"]) == ("invalid_arguments", "argument_validation")
    assert (limited["code"], limited["details"]["guard"]) == ("rate_limited", "rate_limits")
    assert failed["code"] == "upstream_error" and "guard" not in failed["details"]
    for guard, code in (("access", "forbidden"), ("rate_limits", "rate_limited")):
        assert f'interlock_guard_refusals_total{{code="{code}",guard="{guard}",server="fx"' in metrics
    # The condition failed on a real call (no `amount` in the arguments), and that is logged once.
    assert gw.log().count("policy rule 'big-failures'") == 1
