"""The admin UI in a real headless Chromium, served by a real uvicorn on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from gateway.core.clock import ManualClock
from gateway.state import StateStore
from tests.state import open_test_store
from tests.web.backend import ALICE_TOKEN, StandInGateway
from tests.web.conftest import admin_app
from tests.web.serve import serve

pytest.importorskip(
    "playwright.async_api", reason="Playwright is in the test extra: pip install -e '.[test]'"
)

from playwright.async_api import ConsoleMessage, Dialog, Page

from tests.web.browser import log_in

pytestmark = pytest.mark.anyio

BROWSER_LIMIT_S = 60.0
"""Around a whole browser test: Chromium's start dominates, and CI machines are small."""


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[StateStore]:
    """SQLite only, the gateway's default: a browser costs seconds, and the other stores are
    covered by the HTTP tests."""
    async with open_test_store("sqlite", tmp_path, clock) as opened:
        yield opened


class Watch:
    """What the page said that it should not have: console errors (a CSP violation is one) and
    dialogs (an injected ``alert`` would be one)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()


async def test_approve_in_the_browser(users_gateway: StandInGateway, chromium_page: Page) -> None:
    page = chromium_page
    watch = Watch(page)
    with anyio.fail_after(BROWSER_LIMIT_S):
        record = await users_gateway.ask(
            arguments={"order_id": "O-1042", "amount": 250, "note": "<script>alert(1)</script>"},
            approvers=("ops",),
        )
        async with serve(admin_app(users_gateway)) as base:
            await log_in(page, base, ALICE_TOKEN)
            card = page.locator(f"#approval-{record.id}")
            assert await card.locator(".tool").inner_text() == "crm__refund"
            args = await card.locator("pre.args").inner_text()
            assert '"amount": 250' in args and '"note": "<script>alert(1)</script>"' in args
            assert "left" in await card.locator(".countdown").inner_text()
            assert await page.title() == "(1) Interlock admin"

            await card.locator("input[name=comment]").fill("customer called, refund ok")
            async with page.expect_navigation():
                await card.locator("button[value=approve]").click()

            decided = await users_gateway.approvals.get(record.id)
            assert (decided.status, decided.decided_by, decided.comment) == (
                "approved",
                "alice",
                "customer called, refund ok",
            )
            assert "Approved crm__refund" in await page.locator(".flash.ok").inner_text()
            assert await page.locator(f"#approval-{record.id}").count() == 0
            assert "customer called, refund ok" in await page.locator("#decided").inner_text()
    assert watch.errors == [] and watch.dialogs == []


async def test_panels_refresh_without_losing_a_comment(
    open_gateway: StandInGateway, chromium_page: Page, clock: ManualClock
) -> None:
    page = chromium_page
    watch = Watch(page)
    with anyio.fail_after(BROWSER_LIMIT_S):
        first = await open_gateway.ask(timeout_s=600)
        async with serve(admin_app(open_gateway)) as base:
            await page.goto(f"{base}/admin")  # loopback, no admin users: no login
            comment = page.locator(f"#approval-{first.id} input[name=comment]")
            await comment.fill("half-typed thought")

            clock.advance(1)
            second = await open_gateway.ask("deploy", "rollback", {"service": "checkout-api"}, timeout_s=60)
            # The page polls /admin/panels: the new request shows up without a reload...
            await page.locator(f"#approval-{second.id}").wait_for()
            assert await page.title() == "(2) Interlock admin"
            assert await page.locator("#summary .stat.hot").inner_text() == "2 pending"
            # ...and the card being written in is the same node, comment and all.
            assert await comment.input_value() == "half-typed thought"
            # The soonest to expire comes first.
            keys = await page.locator("#pending article").evaluate_all(
                "cards => cards.map(c => c.dataset.key)"
            )
            assert keys == [second.id, first.id]

            # Decided elsewhere (the CLI, another admin): the card goes away by itself.
            await open_gateway.decide(second.id, False, by="bob")
            await page.locator(f"#approval-{second.id}").wait_for(state="detached")
            assert await comment.input_value() == "half-typed thought"

            async with page.expect_navigation():
                await page.locator(f"#approval-{first.id} button[value=deny]").click()
            decided = await open_gateway.approvals.get(first.id)
            assert (decided.status, decided.decided_by, decided.comment) == (
                "denied",
                "local-admin",
                "half-typed thought",
            )
            assert "Denied crm__refund" in await page.locator(".flash").inner_text()
    assert watch.errors == [] and watch.dialogs == []
