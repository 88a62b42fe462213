"""What flows besides call results: list changes, resource updates, logs, sampling, pagination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext, IncomingMessage

from tests.e2e.conftest import Stack
from tests.support import FIXTURE_SERVER, gateway, stdio_server_toml

pytestmark = pytest.mark.anyio


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.arrived = anyio.Event()

    async def __call__(self, message: IncomingMessage) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def wait_for(self, kind: type[Any]) -> Any:
        while True:
            for message in self.messages:
                if isinstance(message, kind):
                    return message
            self.arrived = anyio.Event()
            await self.arrived.wait()


@pytest.mark.parametrize("sid", ["fs", "fl"])
async def test_list_changed_reaches_a_2025_client(stack: Stack, sid: str) -> None:
    inbox = Inbox()
    name = f"added_{sid}_legacy"
    with anyio.fail_after(20):
        async with Client(stack.gateway.mcp_url, mode="legacy", message_handler=inbox) as c:
            await c.list_tools()
            await c.call_tool(f"{sid}__add_tool", {"name": name})
            await inbox.wait_for(types.ToolListChangedNotification)
            names = {t.name for t in (await c.list_tools()).tools}
    assert f"{sid}__{name}" in names


@pytest.mark.parametrize("sid", ["fs", "fl"])
async def test_list_changed_reaches_a_2026_client(stack: Stack, sid: str) -> None:
    name = f"added_{sid}_modern"
    with anyio.fail_after(20):
        async with (
            Client(stack.gateway.mcp_url, mode="2026-07-28") as c,
            c.listen(tools_list_changed=True) as subscription,
        ):
            await c.call_tool(f"{sid}__add_tool", {"name": name})
            names: set[str] = set()
            async for _event in subscription:
                names = {t.name for t in (await c.list_tools()).tools}
                if f"{sid}__{name}" in names:
                    break
    assert f"{sid}__{name}" in names


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")  # deliberate: a 2025-11-25 client
async def test_resource_updates_reach_subscribers(stack: Stack) -> None:
    inbox = Inbox()
    uri = "interlock://fl/fixture://items/7"
    with anyio.fail_after(20):
        async with Client(stack.gateway.mcp_url, mode="legacy", message_handler=inbox) as c:
            await c.subscribe_resource(uri)
            await c.call_tool("fl__touch", {"uri": "fixture://items/7"})
            update = await inbox.wait_for(types.ResourceUpdatedNotification)
    assert str(update.params.uri) == uri


async def test_upstream_logs_reach_the_caller(stack: Stack) -> None:
    seen: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        seen.append(params)

    with anyio.fail_after(20):
        async with Client(stack.gateway.mcp_url, mode="legacy", logging_callback=on_log) as c:
            await c.call_tool("fl__log", {"level": "warning", "message": "disk almost full"})
            await c.call_tool("fl__echo", {"text": "flush"})
    assert any(p.data == "disk almost full" for p in seen)


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
@pytest.mark.parametrize("sid", ["fs", "fl"])
async def test_sampling_reaches_the_callers_model(stack: Stack, era: str, sid: str) -> None:
    if era != "legacy" and sid == "fl":
        pytest.skip("a 2025-11-25 upstream cannot send requests to a 2026-07-28 client")

    async def model(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="42"), model="test-model"
        )

    with anyio.fail_after(20):
        async with Client(stack.gateway.mcp_url, mode=era, sampling_callback=model) as c:
            result = await c.call_tool(f"{sid}__sample", {"prompt": "meaning of life?"})
    assert not result.is_error, result.content
    assert (result.structured_content or {})["answer"] == "42"


async def test_a_cancelled_call_does_not_disturb_the_others(stack: Stack) -> None:
    with anyio.fail_after(30):
        async with Client(stack.gateway.mcp_url, mode="legacy") as c:
            with anyio.move_on_after(0.5):
                await c.call_tool("fs__slow", {"seconds": 20, "steps": 2})
            result = await c.call_tool("fs__echo", {"text": "after cancel"})
    assert result.structured_content == {"text": "after cancel"}


async def test_pagination_uses_the_gateways_own_cursors(tmp_path: Path) -> None:
    config = stdio_server_toml("many", FIXTURE_SERVER, "--name", "many", "--tools", "450")
    with gateway(config, tmp_path) as gw:
        with anyio.fail_after(30):
            async with Client(gw.mcp_url, mode="legacy") as c:
                names: list[str] = []
                cursor: str | None = None
                pages = 0
                while True:
                    page = await c.list_tools(cursor=cursor)
                    names += [t.name for t in page.tools]
                    pages += 1
                    cursor = page.next_cursor
                    if not cursor:
                        break
    assert pages >= 3
    assert len(names) == len(set(names))
    assert {f"many__t{i}" for i in range(450)} <= set(names)
