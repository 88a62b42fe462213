"""Calls through the gateway, over every upstream kind and both client eras."""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "2026-07-28"]
UPSTREAMS = ["fs", "fl", "fx", "fh"]


async def _answer(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"answer": "blue"})


def client(stack: Stack, era: str, **kwargs: Any) -> Client:
    return Client(stack.gateway.mcp_url, mode=era, **kwargs)


@pytest.mark.parametrize("era", ERAS)
async def test_catalog_lists_every_upstream_namespaced(stack: Stack, era: str) -> None:
    with anyio.fail_after(20):
        async with client(stack, era) as c:
            names = {t.name for t in (await c.list_tools()).tools}
    for sid in UPSTREAMS:
        assert {f"{sid}__echo", f"{sid}__whoami", f"{sid}__ask"} <= names


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("sid", UPSTREAMS)
async def test_result_passes_through_with_structured_content(stack: Stack, era: str, sid: str) -> None:
    with anyio.fail_after(20):
        async with client(stack, era) as c:
            result = await c.call_tool(f"{sid}__echo", {"text": f"hello {era}"})
    assert not result.is_error
    assert result.structured_content == {"text": f"hello {era}"}
    assert result.content[0].type == "text" and result.content[0].text == f"hello {era}"


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("sid", UPSTREAMS)
async def test_is_error_results_reach_the_agent(stack: Stack, era: str, sid: str) -> None:
    with anyio.fail_after(20):
        async with client(stack, era) as c:
            result = await c.call_tool(f"{sid}__fail", {"kind": "500"})
    assert result.is_error
    assert "500" in result.content[0].text


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("sid", UPSTREAMS)
async def test_meta_reaches_the_upstream(stack: Stack, era: str, sid: str) -> None:
    with anyio.fail_after(20):
        async with client(stack, era) as c:
            result = await c.call_tool(f"{sid}__whoami", {}, meta={"example.com/trace": "t-42"})
    seen = result.structured_content or {}
    assert seen["meta"].get("example.com/trace") == "t-42"


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("sid", ["fs", "fh"])
async def test_the_callers_capabilities_travel_with_the_call(stack: Stack, era: str, sid: str) -> None:
    """A 2026-07-28 upstream sees, per request, what the calling client declared."""
    with anyio.fail_after(20):
        async with client(stack, era) as plain:
            bare = (await plain.call_tool(f"{sid}__whoami", {})).structured_content or {}
        async with client(stack, era, elicitation_callback=_answer) as able:
            rich = (await able.call_tool(f"{sid}__whoami", {})).structured_content or {}
    assert "elicitation" not in (bare["client_capabilities"] or {})
    assert "elicitation" in (rich["client_capabilities"] or {})


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("sid", UPSTREAMS)
async def test_elicitation_reaches_the_client_that_made_the_call(stack: Stack, era: str, sid: str) -> None:
    if era != "legacy" and sid in ("fl", "fx"):
        pytest.skip("a 2025-11-25 upstream cannot ask a 2026-07-28 client; covered by the next test")
    with anyio.fail_after(20):
        async with client(stack, era, elicitation_callback=_answer) as c:
            result = await c.call_tool(f"{sid}__ask", {"question": "favourite colour?"})
    assert not result.is_error, result.content
    assert (result.structured_content or {})["answer"] == "blue"


async def test_a_legacy_upstream_never_believes_a_modern_client_can_answer(stack: Stack) -> None:
    """A 2026-07-28 client cannot receive server requests, so a stateless 2025-11-25 upstream is
    told the caller declared no elicitation, and refuses the way the spec says (-32021)."""
    with anyio.fail_after(20):
        async with client(stack, "2026-07-28", elicitation_callback=_answer) as c:
            with pytest.raises(MCPError) as caught:
                await c.call_tool("fx__ask", {"question": "favourite colour?"})
    assert caught.value.error.code == -32021


async def test_a_stateful_legacy_upstream_asking_a_modern_client_is_refused_for_it(stack: Stack) -> None:
    """One process, one connection: the gateway answers the upstream's request on the caller's behalf,
    as a client without that capability would; this upstream then fails the call with that error."""
    with anyio.fail_after(20):
        async with client(stack, "2026-07-28", elicitation_callback=_answer) as c:
            with pytest.raises(MCPError) as caught:
                await c.call_tool("fl__ask", {"question": "favourite colour?"})
    assert "elicitation/create" in caught.value.error.message


async def test_a_legacy_upstream_sees_the_capabilities_the_caller_declared(stack: Stack) -> None:
    with anyio.fail_after(20):
        async with client(stack, "legacy") as plain:
            with pytest.raises(MCPError) as caught:
                await plain.call_tool("fx__ask", {"question": "q?"})
            bare = (await plain.call_tool("fx__whoami", {})).structured_content or {}
        async with client(stack, "legacy", elicitation_callback=_answer) as able:
            rich = (await able.call_tool("fx__whoami", {})).structured_content or {}
    assert caught.value.error.code == -32021
    assert "elicitation" not in (bare["client_capabilities"] or {})
    assert "elicitation" in (rich["client_capabilities"] or {})


@pytest.mark.parametrize("sid", ["fs", "fh"])
async def test_input_required_passes_through_byte_for_byte(stack: Stack, sid: str) -> None:
    with anyio.fail_after(20):
        async with client(stack, "2026-07-28", elicitation_callback=_answer) as c:
            first = await c.session.call_tool(f"{sid}__ask", {"question": "q?"}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            state = first.request_state
            assert state
            answers: dict[str, Any] = {
                "answer": types.ElicitResult(action="accept", content={"answer": "green"})
            }
            final = await c.session.call_tool(
                f"{sid}__ask", {"question": "q?"}, input_responses=answers, request_state=state
            )
    assert isinstance(final, types.CallToolResult)
    data = final.structured_content or {}
    assert data["answer"] == "green"
    assert data["request_state"] == state  # the upstream received exactly what it sealed


@pytest.mark.parametrize("era", ERAS)
async def test_progress_is_relayed_to_the_caller(stack: Stack, era: str) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    with anyio.fail_after(20):
        async with client(stack, era) as c:
            result = await c.call_tool(
                "fs__slow", {"seconds": 0.2, "steps": 4}, progress_callback=on_progress
            )
    assert not result.is_error
    assert seen == [1, 2, 3, 4]


@pytest.mark.parametrize("era", ERAS)
async def test_unknown_tool_is_invalid_params_with_suggestions(stack: Stack, era: str) -> None:
    with anyio.fail_after(20):
        async with client(stack, era) as c:
            with pytest.raises(MCPError) as caught:
                await c.call_tool("fs__ecko", {"text": "x"})
    assert caught.value.error.code == -32602
    assert "fs__echo" in caught.value.error.message
    assert "fs__echo" in caught.value.error.data["error"]["details"]["suggestions"]


async def test_colliding_ids_from_concurrent_clients_each_get_their_own_answer(stack: Stack) -> None:
    """100 calls from 10 clients whose JSON-RPC ids collide share one upstream connection."""
    results: dict[str, str] = {}

    async def agent(n: int) -> None:
        async with client(stack, "legacy") as c:
            for i in range(10):
                text = f"agent{n}-call{i}"
                result = await c.call_tool("fs__echo", {"text": text})
                results[text] = (result.structured_content or {}).get("text", "")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(agent, n)
    assert len(results) == 100
    assert all(key == value for key, value in results.items())


@pytest.mark.parametrize("era", ERAS)
async def test_resources_and_prompts_are_aggregated_and_routed(stack: Stack, era: str) -> None:
    with anyio.fail_after(20):
        async with client(stack, era) as c:
            uris = [str(r.uri) for r in (await c.list_resources()).resources]
            assert "interlock://fs/fixture://static/hello" in uris
            read = await c.read_resource("interlock://fh/fixture://static/hello")
            assert str(read.contents[0].uri) == "interlock://fh/fixture://static/hello"
            prompts = {p.name for p in (await c.list_prompts()).prompts}
            assert {"fs__greet", "fl__greet", "fh__greet"} <= prompts
            prompt = await c.get_prompt("fl__greet", {"name": "Ada"})
            assert "Ada" in json.dumps(prompt.model_dump(mode="json"))


async def test_http_upstreams_are_shared_not_reconnected_per_call(stack: Stack) -> None:
    """Two clients, four calls: the upstream sees one session the whole time (no per-call handshake)."""
    sessions = set()
    with anyio.fail_after(20):
        for _ in range(2):
            async with client(stack, "legacy") as c:
                for _ in range(2):
                    seen = (await c.call_tool("fh__whoami", {})).structured_content or {}
                    sessions.add((seen.get("headers") or {}).get("mcp-session-id"))
    assert len(sessions) == 1 and None not in sessions
