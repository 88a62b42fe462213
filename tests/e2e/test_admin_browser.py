"""The whole loop in a real browser: an agent's call is held for approval by a real gateway, a person
opens /admin in headless Chromium, sees the request, clicks Approve, and the held call completes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.e2e.test_approvals import REFUND
from tests.support import ROOT, gateway, stdio_server_toml
from tests.web.browser import chromium_missing, chromium_page_open, log_in

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing())),
]

ALICE = "alice-admin-token-0123456789"
POLICY = """
[[rules]]
name = "refunds-need-ops"
match = { tools = ["crm__refund"] }
approval = { timeout_s = 300, mode = "hold", approvers = ["ops"], reason = "refunds are reviewed by ops" }
"""


async def test_approving_in_the_browser_releases_the_held_call(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "50-refunds.toml").write_text(POLICY)
    record_file = tmp_path / "crm.jsonl"
    config = (
        f'[gateway]\nstate = "sqlite:///{tmp_path / "state.db"}"\n\n'
        f'[[admin.users]]\nname = "alice"\ntoken = "{ALICE}"\ngroups = ["ops"]\n\n'
        + stdio_server_toml(
            "crm",
            str(ROOT / "examples" / "crm_server.py"),
            extra=f'env = {{ EXAMPLE_RECORD_FILE = "{record_file}" }}',
        )
    )
    args = {**REFUND, "amount": 420, "reason": "parcel lost"}
    results: list[Any] = []
    done = anyio.Event()
    with gateway(config, tmp_path) as gw:

        async def agent() -> None:
            async with Client(gw.mcp_url, mode="legacy") as c:
                results.append(await c.call_tool("crm__refund", args))
            done.set()

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg, chromium_page_open() as page:
                tg.start_soon(agent)
                await log_in(page, gw.url, ALICE)
                card = page.locator("article[id^=approval-]", has_text="crm__refund")
                while await card.count() == 0:  # the page refreshes itself every few seconds
                    await page.wait_for_timeout(250)
                assert await card.locator(".tool").inner_text() == "crm__refund"
                shown = await card.locator("pre.args").inner_text()
                assert '"amount": 420' in shown and '"customer_id": "C000123"' in shown
                assert "refunds are reviewed by ops" in await card.inner_text()
                assert results == []  # still held: nothing ran yet
                await card.locator("input[name=comment]").fill("checked with the carrier")
                async with page.expect_navigation():
                    await card.locator("button[value=approve]").click()
                await done.wait()
                approved = await page.locator(".flash").inner_text()
    result = results[0]
    assert not result.is_error, result
    assert (result.structured_content or {})["amount"] == 420
    lines = record_file.read_text().splitlines()
    assert [json.loads(x)["arguments"] for x in lines].count(args) == 1
    assert "approved" in approved.lower()
