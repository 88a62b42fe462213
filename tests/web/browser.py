"""Driving the admin UI in a real headless Chromium: Debian's /usr/bin/chromium through Playwright
(never a browser Playwright downloads). ``scripts/ensure-chromium.sh`` installs it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import Page, async_playwright

CHROMIUM = os.environ.get("INTERLOCK_CHROMIUM", "/usr/bin/chromium")
ACTION_TIMEOUT_MS = 10_000
"""Playwright waits this long for an element or a navigation before failing the test."""


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh"
    return None


def launch_options() -> dict[str, Any]:
    return {
        "executable_path": CHROMIUM,
        "headless": True,
        # Tests run as root here, and Chromium refuses root without --no-sandbox; /dev/shm is
        # small in containers, so shared memory goes to /tmp.
        "args": ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    }


async def log_in(page: Page, base_url: str, token: str, *, next_path: str = "/admin") -> None:
    """Sign in through the login form, as a person would, and land on ``next_path``."""
    await page.goto(f"{base_url}/admin/login?next={next_path}")
    await page.fill("#token", token)
    async with page.expect_navigation():
        await page.click("button[type=submit]")


@asynccontextmanager
async def chromium_page_open(*, width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
    """A page in a fresh headless Chromium, closed (with the browser) on exit. The ``chromium_page``
    fixture wraps this; tests outside tests/web can use either (import the fixture into a conftest)."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(**launch_options())
        try:
            context = await browser.new_context(viewport={"width": width, "height": height})
            page = await context.new_page()
            page.set_default_timeout(ACTION_TIMEOUT_MS)
            yield page
        finally:
            await browser.close()
