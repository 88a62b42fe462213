"""After an upstream outage, the agent's identical retry runs: a transient failure is not a loop.

The flaky trading API (examples/flaky_server.py, over stdio) hangs for a set number of calls;
the gateway's timeout turns each into ``upstream_timeout``, which is retryable. The gateway does
not retry here (``max_attempts = 1``): the agent sees every failure and retries itself.
A server-side failure (HTTP 500) is still a failing retry, and a 429's ``Retry-After`` still holds
back an identical call that comes too soon.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from mcp import Client

from tests.support import ROOT, gateway, gateway_error, stdio_server_toml

pytestmark = pytest.mark.anyio

POLICY = """
[[rules]]
name = "no-breaker"  # the failures below would open it; this test is about loop detection
match = { servers = ["flaky"] }
breaker = { enabled = false }

[[rules]]
name = "flaky-quotes"
match = { tools = ["flaky__get_quote"] }
idempotent = true
timeout_s = 1
retry = { max_attempts = 1 }
"""


def _quotes(record: Path) -> int:
    lines = record.read_text().splitlines() if record.exists() else []
    return sum(json.loads(line)["tool"] == "get_quote" for line in lines)


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_the_identical_retry_runs_once_the_upstream_is_back(tmp_path: Path, era: str) -> None:
    record = tmp_path / "flaky.jsonl"
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.toml").write_text((ROOT / "policies" / "default.toml").read_text())
    (tmp_path / "policies" / "50-test.toml").write_text(POLICY)
    flaky = stdio_server_toml(
        "flaky",
        str(ROOT / "examples" / "flaky_server.py"),
        extra=f'env = {{ EXAMPLE_RECORD_FILE = "{record}" }}',
    )
    quote = {"symbol": "ACME"}
    with gateway(flaky, tmp_path) as gw:
        with anyio.fail_after(60):
            async with Client(gw.mcp_url, mode=era) as agent:
                # An outage longer than max_failing_retries (3): four timeouts in a row.
                await agent.call_tool("flaky__set_mode", {"mode": "hang", "count": 4})
                codes = [
                    gateway_error(await agent.call_tool("flaky__get_quote", quote))["code"] for _ in range(4)
                ]
                back = await agent.call_tool("flaky__get_quote", quote)
                # A failure that is the server's own (HTTP 500) still is one: retried unchanged
                # three times, the fourth is refused before it reaches the upstream.
                await agent.call_tool("flaky__set_mode", {"mode": "500", "count": 3})
                broken = {"symbol": "BUST"}
                failures = [
                    gateway_error(await agent.call_tool("flaky__get_quote", broken)) for _ in range(3)
                ]
                reached = _quotes(record)
                refused = gateway_error(await agent.call_tool("flaky__get_quote", broken))
                # A 429 says when to come back: an identical call sooner is held back here.
                await agent.call_tool("flaky__set_mode", {"mode": "429", "count": 1})
                slow = {"symbol": "SLOW"}
                limited = gateway_error(await agent.call_tool("flaky__get_quote", slow))
                held = gateway_error(await agent.call_tool("flaky__get_quote", slow))
    assert codes == ["upstream_timeout"] * 4
    assert not back.is_error, gateway_error(back)
    assert back.structured_content["symbol"] == "ACME"
    assert [f["code"] for f in failures] == ["upstream_error"] * 3
    assert refused["code"] == "loop_detected" and refused["details"]["kind"] == "failing_retries"
    assert limited["code"] == "upstream_rate_limited" and limited["retry_after_s"] == 2
    assert held["code"] == "rate_limited" and 0 < held["retry_after_s"] <= 2
    assert held["details"] == {"reason": "retry_after", "error": "upstream_rate_limited", "guard": "loops"}
    assert reached == 8 and _quotes(record) == 9, "neither refused call reached the upstream"
