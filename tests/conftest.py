"""Shared test setup: the asyncio backend for anyio tests, and process helpers."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
