"""Fixtures for the admin plane: a real approval service on a real store behind a stand-in gateway,
HTTP clients that reach it from chosen peer addresses, and a headless Chromium page.

``chromium_page`` (with ``tests.web.browser.log_in``) is meant for reuse: any test that serves an
admin plane on a real port (the stand-in here, or ``interlock serve``) can drive it with a browser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from starlette.applications import Starlette

from gateway.approvals import ApprovalService
from gateway.config import AdminSettings
from gateway.core.clock import ManualClock
from gateway.state import StateStore
from gateway.web.routes import admin_routes
from tests.state import open_test_store
from tests.web.backend import StandInGateway, admins

if TYPE_CHECKING:
    from playwright.async_api import Page

BASE_URL = "http://127.0.0.1:8080"
LOOPBACK = "127.0.0.1"
REMOTE = "203.0.113.7"
"""A documentation address (TEST-NET-3): a peer that is not on this machine."""

ClientFactory = Callable[..., httpx2.AsyncClient]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[StateStore]:
    async with open_test_store(request.param, tmp_path, clock) as opened:
        yield opened


@pytest.fixture
def service(store: StateStore, clock: ManualClock) -> ApprovalService:
    return ApprovalService(store, clock)


@pytest.fixture
def open_gateway(service: ApprovalService) -> StandInGateway:
    """No admin users: loopback only, as local-admin."""
    return StandInGateway(service, AdminSettings())


@pytest.fixture
def users_gateway(service: ApprovalService) -> StandInGateway:
    """Admin users alice (ops) and bob (support)."""
    return StandInGateway(service, admins())


def admin_app(gateway: StandInGateway) -> Starlette:
    return Starlette(routes=admin_routes(gateway))


@pytest.fixture
async def connect() -> AsyncIterator[ClientFactory]:
    """``connect(gateway, peer=..., **client_options)``: an HTTP client that reaches the admin
    plane in-process, from ``peer`` as its address; all are closed after the test."""
    clients: list[httpx2.AsyncClient] = []

    def make(gateway: StandInGateway, *, peer: str = LOOPBACK, **options: Any) -> httpx2.AsyncClient:
        transport = httpx2.ASGITransport(app=admin_app(gateway), client=(peer, 50123))
        client = httpx2.AsyncClient(
            transport=transport, base_url=options.pop("base_url", BASE_URL), **options
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def chromium_page() -> AsyncIterator[Page]:
    """A page in a fresh headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

    Skips, saying how to fix it, when Playwright or the browser is missing; ``make test`` installs
    both (``pip install -e '.[test]'`` and ``scripts/ensure-chromium.sh``)."""
    pytest.importorskip(
        "playwright.async_api", reason="Playwright is in the test extra: pip install -e '.[test]'"
    )
    from tests.web.browser import chromium_missing, chromium_page_open

    missing = chromium_missing()
    if missing:
        pytest.skip(missing)
    async with chromium_page_open() as page:
        yield page
