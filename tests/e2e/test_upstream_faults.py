"""Fault injection from upstreams: an upstream that lies or breaks must cost its own callers a
structured error, never a hang or a protocol error, and must cost everyone else nothing.

``rg`` is tests/fixtures/rogue_server.py (raw JSON-RPC over stdio, one fault per tool); ``fs`` is
the well-behaved fixture server beside it. The tests marked xfail pin defects whose fix lies
outside the downstream edge (the upstream transport and the tools/call handler); each reason says
what goes wrong today.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.e2e.raw import call, final, legacy_headers, open_session, post, request, tool_error_code
from tests.support import FIXTURE_SERVER, ROOT, Proc, gateway, stdio_server_toml

pytestmark = pytest.mark.anyio

ROGUE = str(ROOT / "tests" / "fixtures" / "rogue_server.py")
CALL_TIMEOUT_S = 2  # how long a dropped answer is waited for; the xfail cases end by it today
# The breaker and loop detection would turn repeated faults into refusals of the next case.
RELAXED_POLICY = """
[[rules]]
name = "faults"
match = { servers = ["rg", "fs"] }
breaker = { enabled = false }
loops = { enabled = false }
"""


@dataclass
class Rogue:
    gateway: Proc
    session: str

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """The answer to one tools/call: its result, or the JSON-RPC error it got."""
        body = json.dumps(call(tool, arguments or {}, rid=tool))
        async with httpx2.AsyncClient(timeout=30) as client:
            return final(await post(client, self.gateway.mcp_url, body, legacy_headers(self.session)))

    async def result(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = await self.call(tool, arguments)
        assert "result" in answer, answer
        return dict(answer["result"])

    async def tool_names(self) -> list[str]:
        async with httpx2.AsyncClient(timeout=30) as client:
            headers = legacy_headers(self.session)
            answer = final(
                await post(client, self.gateway.mcp_url, json.dumps(request("tools/list")), headers)
            )
        return [str(tool["name"]) for tool in answer["result"]["tools"]]

    async def others_are_served(self) -> None:
        result = await self.result("fs__echo", {"text": "unaffected"})
        assert result["structuredContent"] == {"text": "unaffected"}, result
        assert self.gateway.proc.poll() is None


def _start(tmp: Path) -> Iterator[Rogue]:
    (tmp / "policies").mkdir()
    (tmp / "policies" / "default.toml").write_text((ROOT / "policies" / "default.toml").read_text())
    (tmp / "policies" / "50-faults.toml").write_text(RELAXED_POLICY)
    config = (
        f"[gateway]\ncall_timeout_s = {CALL_TIMEOUT_S}\n\n"
        + stdio_server_toml("rg", ROGUE)
        + stdio_server_toml("fs", FIXTURE_SERVER, "--name", "fs")
    )
    with gateway(config, tmp) as gw:
        yield Rogue(gw, open_session(gw.mcp_url))


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rogue]:
    """Shared by the faults that leave the upstream connection intact."""
    yield from _start(tmp_path_factory.mktemp("faults"))


@pytest.fixture
def fresh_rogue(tmp_path: Path) -> Iterator[Rogue]:
    """For the faults that break the connection or count what the upstream saw."""
    yield from _start(tmp_path)


async def _until_echo_works(rogue: Rogue) -> None:
    with anyio.fail_after(30):
        while True:
            answer = await rogue.call("rg__echo", {"text": "back"})
            if answer.get("result", {}).get("content") == [{"type": "text", "text": "back"}]:
                return
            await anyio.sleep(0.05)


# -- faults the gateway already absorbs (regression guards) -------------------------------------


async def test_a_listing_with_malformed_and_duplicate_tools_keeps_the_good_ones(rogue: Rogue) -> None:
    names = await rogue.tool_names()
    assert "rg__echo" in names and "rg__bad_schema" not in names
    assert names.count("rg__echo") == 1
    assert all(isinstance(name, str) and name for name in names)
    await rogue.others_are_served()


@pytest.mark.parametrize(
    ("tool", "arguments", "text"),
    [
        ("rg__unknown_id", {}, "the real answer"),
        ("rg__answer_twice", {}, "first"),
        ("rg__garbage_stdout", {}, "after the garbage"),
        ("rg__notification_flood", {"count": 600}, "after the flood"),
    ],
)
async def test_stray_messages_around_an_answer_do_not_hide_it(
    rogue: Rogue, tool: str, arguments: dict[str, Any], text: str
) -> None:
    result = await rogue.result(tool, arguments)
    assert result["content"] == [{"type": "text", "text": text}], result
    assert (await rogue.result("rg__echo", {"text": "next"}))["content"][0]["text"] == "next"
    await rogue.others_are_served()


async def test_a_huge_result_is_cut_to_the_policy_size_with_a_note(rogue: Rogue) -> None:
    result = await rogue.result("rg__huge_result", {"kbytes": 4096})
    assert len(json.dumps(result)) < 4096 * 1024  # the default policy's max_result_bytes
    assert any('"truncated"' in block.get("text", "") for block in result["content"]), result["content"][1:]
    await rogue.others_are_served()


async def test_a_string_is_error_is_read_as_a_failure(rogue: Rogue) -> None:
    result = await rogue.result("rg__is_error_string")
    assert result["isError"] is True, result
    await rogue.others_are_served()


async def test_an_error_with_a_huge_message_and_nested_data_is_a_structured_error(rogue: Rogue) -> None:
    result = await rogue.result("rg__weird_error_data")
    assert tool_error_code(result) == "upstream_error", result
    assert len(result["content"][0]["text"]) < 20_000, "the upstream's 100 KB message reached the agent whole"
    await rogue.others_are_served()


async def test_a_tool_list_that_changes_between_calls_is_followed(rogue: Rogue) -> None:
    before = {n for n in await rogue.tool_names() if n.startswith("rg__phase_")}
    await rogue.result("rg__shifting_list")  # sends tools/list_changed before its answer
    with anyio.fail_after(30):
        # The gateway re-lists in the background and offers nothing to wait on.
        while {n for n in await rogue.tool_names() if n.startswith("rg__phase_")} == before:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    await rogue.others_are_served()


async def test_an_upstream_that_dies_mid_response_costs_one_structured_error(fresh_rogue: Rogue) -> None:
    result = await fresh_rogue.result("rg__die_mid_response")
    assert tool_error_code(result) == "upstream_unavailable", result
    await fresh_rogue.others_are_served()
    await _until_echo_works(fresh_rogue)  # the supervisor restarts it


# -- defects outside the downstream edge (xfail until fixed) ------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="a result of the wrong shape (content not a list, structuredContent not an object) becomes "
    "the SDK's -32603 'Handler returned an invalid result' protocol error, with a traceback in the log, "
    "instead of a tool-plane upstream_error (handlers.call_tool should check the shape)",
)
@pytest.mark.parametrize("tool", ["rg__content_not_list", "rg__structured_not_object"])
async def test_a_result_of_the_wrong_shape_is_a_tool_plane_upstream_error(rogue: Rogue, tool: str) -> None:
    answer = await rogue.call(tool)
    assert "result" in answer, answer
    assert tool_error_code(answer["result"]) == "upstream_error"
    await rogue.others_are_served()


@pytest.mark.xfail(
    strict=True,
    reason="the SDK's stdio client drops a response it cannot validate (result not an object, error "
    "code not an integer, no error message) with an ERROR log; the call waits out its whole timeout "
    "and ends as outcome_unknown. The upstream transport should answer the waiting id with an error",
)
@pytest.mark.parametrize(
    "tool", ["rg__result_not_object", "rg__result_null", "rg__bizarre_error", "rg__error_no_message"]
)
async def test_a_response_that_breaks_json_rpc_fails_the_call_at_once(rogue: Rogue, tool: str) -> None:
    result = await rogue.result(tool)
    assert tool_error_code(result) == "upstream_error", result
    await rogue.others_are_served()


@pytest.mark.xfail(
    strict=True,
    reason="UpstreamConnection.request (gateway/upstream/connection.py) tells the SDK's own errors "
    "from the upstream's by code: an upstream's -32000 (the usual 'server error') is taken for "
    "CONNECTION_CLOSED, so the connection is torn down and the upstream restarted, failing every call "
    "in flight; an upstream's -32001 is taken for the SDK's REQUEST_TIMEOUT and reported as "
    "outcome_unknown. Compare by identity (the dispatcher's closed outcome) or by the session's state",
)
@pytest.mark.parametrize("code", [-32000, -32001])
async def test_an_upstream_error_code_that_the_sdk_also_uses_is_the_upstreams(
    fresh_rogue: Rogue, code: int
) -> None:
    result = await fresh_rogue.result("rg__plain_error", {"code": code})
    assert tool_error_code(result) == "upstream_error", result
    after = await fresh_rogue.result("rg__echo", {"text": "same connection"})
    assert after["content"] == [{"type": "text", "text": "same connection"}], after


async def test_an_ordinary_upstream_error_code_is_an_upstream_error(rogue: Rogue) -> None:
    result = await rogue.result("rg__plain_error", {"code": -32603})
    assert tool_error_code(result) == "upstream_error", result
    assert (await rogue.result("rg__echo", {"text": "next"}))["content"][0]["text"] == "next"


@pytest.mark.xfail(
    strict=True,
    reason="one line of invalid UTF-8 on a stdio upstream's stdout kills the SDK's reader "
    "(UnicodeDecodeError, strict decoding); calls then time out until the heartbeat notices. "
    "StdioServerParameters(encoding_error_handler='replace') in gateway/upstream/transport.py would "
    "skip the line like any other garbage",
)
async def test_a_line_of_invalid_utf8_from_a_stdio_upstream_is_skipped(fresh_rogue: Rogue) -> None:
    result = await fresh_rogue.result("rg__invalid_utf8_stdout")
    assert result["content"] == [{"type": "text", "text": "after the invalid line"}], result


@pytest.mark.xfail(
    strict=True,
    reason="every notifications/tools/list_changed triggers its own full re-listing of the upstream "
    "(and its warnings): a flood of N notifications costs N tools/list requests. The supervisor should "
    "coalesce list changes that arrive while a re-listing is pending",
)
async def test_a_flood_of_list_changes_is_coalesced(fresh_rogue: Rogue) -> None:
    await fresh_rogue.result("rg__notification_flood", {"count": 300})  # 100 of them are list changes
    seen, stable = -1, 0
    with anyio.fail_after(60):
        while stable < 5:  # until the re-listing it caused has settled
            count = int((await fresh_rogue.result("rg__listings"))["content"][0]["text"])
            stable, seen = (stable + 1, seen) if count == seen else (0, count)
            await anyio.sleep(0.1)
    assert seen <= 5, f"{seen} tools/list requests for one burst of 100 list changes"
