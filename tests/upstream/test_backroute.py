"""Upstream log messages that no single calling session can hear go to the gateway log."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import mcp_types as types
import pytest

from gateway.upstream.backroute import BackRouter

pytestmark = pytest.mark.anyio


class Channel:
    def __init__(self, session_key: str) -> None:
        self.session_key = session_key
        self.capabilities: Mapping[str, Any] = {}
        self.heard: list[tuple[str, Mapping[str, Any] | None]] = []

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        self.heard.append((method, params))


def _message(text: str) -> types.LoggingMessageNotificationParams:
    return types.LoggingMessageNotificationParams(level="warning", logger="db", data=text)


async def test_a_log_message_reaches_the_one_calling_session_else_the_gateway_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = BackRouter("crm")
    alone = Channel("s1")
    router.inflight["r1"] = alone  # type: ignore[assignment]
    with caplog.at_level(logging.DEBUG, logger="interlock.upstream"):
        await router.log_message(_message("one caller"))
        router.inflight["r2"] = Channel("s2")  # type: ignore[assignment]
        await router.log_message(_message("two callers"))
        router.inflight.clear()
        await router.log_message(_message("nobody"))
    assert [params["data"] for _, params in alone.heard if params] == ["one caller"]
    logged = [record.getMessage() for record in caplog.records]
    assert logged == ["crm log (warning, db): two callers", "crm log (warning, db): nobody"]
