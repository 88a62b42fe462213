"""Upstream log messages reach the calling client at the level it asked for, in both eras.

A 2026-07-28 upstream sends ``notifications/message`` only for a request whose
``_meta["io.modelcontextprotocol/logLevel"]`` opted in, and only at or above that level. The
gateway has to put that opt-in on every request it forwards: a 2025-11-25 client's
``logging/setLevel`` (every level when it never set one), a 2026-07-28 client's own opt-in as
sent. On the way back, what the client did not ask for must not reach it, whichever era the
upstream speaks.

Upstreams (the fixture server, each in its own era; the 2026-07-28 ones also log on
``resources/read``, ``prompts/get`` and ``completion/complete``, ``--log-reads``):
- ``ms``: 2026-07-28 only, over stdio (one process, one connection shared by every client),
- ``mh``: 2026-07-28 only, over Streamable HTTP,
- ``ls``: 2025-11-25 only, over stdio; it sends every log it is told to, whatever the level set.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import mcp_types as types
import pytest
from mcp import Client

from tests.support import FIXTURE_SERVER, Proc, gateway, http_fixture, http_server_toml, stdio_server_toml

# Deliberate: these clients use the logging capability, deprecated as of 2026-07-28.
pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore:The logging capability is deprecated")]

LIMIT_S = 20


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("logs")
    with http_fixture(tmp, "--era", "modern", "--log-reads", name="mh") as upstream:
        config = (
            stdio_server_toml("ms", FIXTURE_SERVER, "--name", "ms", "--era", "modern", "--log-reads")
            + http_server_toml("mh", upstream.mcp_url)
            + stdio_server_toml("ls", FIXTURE_SERVER, "--name", "ls", "--era", "legacy")
        )
        with gateway(config, tmp) as proc:
            yield proc


class Logs:
    """What one client heard, in order of arrival."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, object]] = []

    async def __call__(self, params: types.LoggingMessageNotificationParams) -> None:
        self.heard.append((params.level, params.data))


async def _log(client: Client, sid: str, level: str, message: str) -> None:
    result = await client.call_tool(f"{sid}__log", {"level": level, "message": message})
    assert not result.is_error, result.content


async def _log_three(client: Client, sid: str) -> None:
    """Below, at and above ``info``: one that must not arrive goes first, so a leak shows."""
    await _log(client, sid, "debug", "below")
    await _log(client, sid, "info", "at")
    await _log(client, sid, "error", "above")
    await client.call_tool(f"{sid}__echo", {"text": "flush"})  # anything still in flight lands first


@pytest.mark.parametrize("sid", ["ms", "mh", "ls"])
async def test_a_2025_client_hears_what_its_set_level_asks_for(gw: Proc, sid: str) -> None:
    logs = Logs()
    with anyio.fail_after(LIMIT_S):
        async with Client(gw.mcp_url, mode="legacy", logging_callback=logs) as client:
            await client.set_logging_level("info")
            await _log_three(client, sid)
    assert logs.heard == [("info", "at"), ("error", "above")]


@pytest.mark.parametrize("sid", ["ms", "mh"])
async def test_a_2025_client_that_set_no_level_hears_every_level(gw: Proc, sid: str) -> None:
    logs = Logs()
    with anyio.fail_after(LIMIT_S):
        async with Client(gw.mcp_url, mode="legacy", logging_callback=logs) as client:
            await _log(client, sid, "debug", "detail")
            await client.call_tool(f"{sid}__echo", {"text": "flush"})
    assert logs.heard == [("debug", "detail")]


async def test_a_later_set_level_applies_to_the_next_calls(gw: Proc) -> None:
    logs = Logs()
    with anyio.fail_after(LIMIT_S):
        async with Client(gw.mcp_url, mode="legacy", logging_callback=logs) as client:
            await client.set_logging_level("debug")
            await _log(client, "ms", "debug", "verbose")
            await client.set_logging_level("error")
            await _log(client, "ms", "warning", "quiet now")
            await _log(client, "ms", "error", "still heard")
            await client.call_tool("ms__echo", {"text": "flush"})
    assert logs.heard == [("debug", "verbose"), ("error", "still heard")]


@pytest.mark.parametrize("sid", ["ms", "mh", "ls"])
async def test_a_2026_client_hears_what_its_own_opt_in_asks_for(gw: Proc, sid: str) -> None:
    logs = Logs()
    with anyio.fail_after(LIMIT_S):
        async with Client(gw.mcp_url, mode="2026-07-28", logging_callback=logs, log_level="info") as client:
            await _log_three(client, sid)
    assert logs.heard == [("info", "at"), ("error", "above")]


@pytest.mark.parametrize("sid", ["ms", "mh", "ls"])
async def test_a_2026_client_that_did_not_opt_in_hears_nothing(gw: Proc, sid: str) -> None:
    logs = Logs()
    with anyio.fail_after(LIMIT_S):
        async with Client(gw.mcp_url, mode="2026-07-28", logging_callback=logs) as client:
            await _log(client, sid, "emergency", "not asked for")
            await client.call_tool(f"{sid}__echo", {"text": "flush"})
    assert logs.heard == []


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
@pytest.mark.parametrize("sid", ["ms", "mh"])
async def test_reads_carry_the_callers_level_too(gw: Proc, sid: str, era: str) -> None:
    logs = Logs()
    opt_in = {} if era == "legacy" else {"log_level": "info"}
    with anyio.fail_after(LIMIT_S):
        async with Client(gw.mcp_url, mode=era, logging_callback=logs, **opt_in) as client:
            if era == "legacy":
                await client.set_logging_level("info")
            await client.read_resource(f"interlock://{sid}/fixture://static/hello")
            await client.get_prompt(f"{sid}__greet", {"name": "Ada"})
            ref = types.PromptReference(type="ref/prompt", name=f"{sid}__greet")
            await client.complete(ref, {"name": "name", "value": "A"})
            await client.call_tool(f"{sid}__echo", {"text": "flush"})
    assert logs.heard == [("info", m) for m in ("resources/read", "prompts/get", "completion/complete")]
