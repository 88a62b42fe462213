"""Every store test runs against memory, SQLite and a real Redis, on a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.clock import ManualClock
from gateway.state.base import StateStore
from tests.state import KINDS, open_test_store


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=KINDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[StateStore]:
    async with open_test_store(request.param, tmp_path, clock) as opened:
        yield opened
