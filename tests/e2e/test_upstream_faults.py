"""Fault injection from upstreams: an upstream that lies or breaks must cost its own callers a
structured error, never a hang or a protocol error, and must cost everyone else nothing.

``rg`` is tests/fixtures/rogue_server.py (raw JSON-RPC over stdio, one fault per tool), ``rh`` the
same over HTTP for the faults an HTTP body can carry, ``rm`` the same in the 2026-07-28 era; ``fs`` is
the well-behaved fixture server beside it. Each test's docstring says what used to go wrong.
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

from tests.e2e.raw import (
    call,
    final,
    legacy_headers,
    modern_headers,
    open_session,
    post,
    request,
    tool_error_code,
)
from tests.support import (
    ERROR_META_KEY,
    FIXTURE_SERVER,
    PYTHON,
    ROOT,
    Proc,
    free_port,
    gateway,
    http_server_toml,
    spawn,
    stdio_server_toml,
    wait_http,
)

pytestmark = pytest.mark.anyio

ROGUE = str(ROOT / "tests" / "fixtures" / "rogue_server.py")
CALL_TIMEOUT_S = 2  # a call that waits for an answer already given would end by it
# The breaker and loop detection would turn repeated faults into refusals of the next case.
RELAXED_POLICY = """
[[rules]]
name = "faults"
match = { servers = ["rg", "rh", "rm", "fs"] }
breaker = { enabled = false }
loops = { enabled = false }
"""


@dataclass
class Rogue:
    gateway: Proc
    session: str

    async def call(
        self, tool: str, arguments: dict[str, Any] | None = None, *, modern: bool = False
    ) -> dict[str, Any]:
        """The answer to one tools/call (from a 2025-11-25 session, or sessionless 2026-07-28):
        its result, or the JSON-RPC error it got."""
        message = call(tool, arguments or {}, modern=modern, rid=tool)
        headers = modern_headers(message) if modern else legacy_headers(self.session)
        async with httpx2.AsyncClient(timeout=30) as client:
            return final(await post(client, self.gateway.mcp_url, json.dumps(message), headers))

    async def result(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = await self.call(tool, arguments)
        assert "result" in answer, answer
        return dict(answer["result"])

    async def text(self, tool: str) -> str:
        """The text a well-behaved tool answered."""
        return str((await self.result(tool))["content"][0]["text"])

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


def gateway_error(result: dict[str, Any]) -> dict[str, Any]:
    """The gateway's error in a raw tools/call result: in ``_meta``, and the same in the text."""
    assert result.get("isError") is True, result
    error = result["_meta"][ERROR_META_KEY]
    assert json.loads(result["content"][0]["text"]) == {"error": error}, result
    return dict(error)


def _start(tmp: Path, rogue_toml: str | None = None) -> Iterator[Rogue]:
    (tmp / "policies").mkdir()
    (tmp / "policies" / "default.toml").write_text((ROOT / "policies" / "default.toml").read_text())
    (tmp / "policies" / "50-faults.toml").write_text(RELAXED_POLICY)
    config = (
        f"[gateway]\ncall_timeout_s = {CALL_TIMEOUT_S}\n\n"
        + (rogue_toml or stdio_server_toml("rg", ROGUE))
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


@pytest.fixture(scope="module")
def modern_rogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rogue]:
    """The rogue as ``rm``, in the 2026-07-28 era."""
    yield from _start(tmp_path_factory.mktemp("modern-faults"), stdio_server_toml("rm", ROGUE, "--modern"))


@pytest.fixture(scope="module")
def http_rogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rogue]:
    """The rogue as ``rh``, over HTTP."""
    tmp = tmp_path_factory.mktemp("http-faults")
    port = free_port()
    with spawn([PYTHON, ROGUE, "--http-port", str(port)], tmp / "rogue.log") as upstream:
        wait_http(f"http://127.0.0.1:{port}/mcp", proc=upstream.proc)
        yield from _start(tmp, http_server_toml("rh", f"http://127.0.0.1:{port}/mcp"))


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


# -- faults that used to hang a call, restart the upstream or surface as protocol errors ---------


@pytest.mark.parametrize("tool", ["rg__content_not_list", "rg__structured_not_object"])
async def test_a_result_of_the_wrong_shape_is_a_tool_plane_upstream_error(rogue: Rogue, tool: str) -> None:
    """The SDK's server would send it as a bare -32603 "Handler returned an invalid result", with
    a traceback in the gateway log."""
    answer = await rogue.call(tool)
    assert "result" in answer, answer
    error = gateway_error(answer["result"])
    assert error["code"] == "upstream_error", error
    assert error["details"]["reason"] == "malformed_result", error
    await rogue.others_are_served()
    assert "returned an invalid result" not in rogue.gateway.log()  # the SDK's, with its traceback


@pytest.mark.parametrize(
    ("tool", "fault"),
    [
        ("rg__result_not_object", "its result is an array, not an object"),
        ("rg__result_null", "its result is null, not an object"),
        ("rg__bizarre_error", "its error code is a string, not an integer"),
        ("rg__error_no_message", "its error has no message"),
    ],
)
async def test_a_response_that_breaks_json_rpc_fails_the_call_at_once(
    rogue: Rogue, tool: str, fault: str
) -> None:
    """The SDK drops a response it cannot validate; the call used to wait out its whole timeout
    and end as outcome_unknown, though the upstream had answered."""
    error = gateway_error(await rogue.result(tool))
    assert error["code"] == "upstream_error", error
    assert error["details"] == {"reason": "malformed_response", "fault": fault}, error
    await rogue.others_are_served()


@pytest.mark.parametrize("code", [-32000, -32001])
async def test_an_upstream_error_code_that_the_sdk_also_uses_is_the_upstreams(
    fresh_rogue: Rogue, code: int
) -> None:
    """-32000 and -32001 are also the SDK's codes for a closed connection and a timeout; the
    upstream's own were taken for them (the connection torn down, or outcome_unknown)."""
    pid = await fresh_rogue.text("rg__pid")
    error = gateway_error(await fresh_rogue.result("rg__plain_error", {"code": code}))
    assert error["code"] == "upstream_error", error
    assert error["details"]["jsonrpc_code"] == code, error
    after = await fresh_rogue.result("rg__echo", {"text": "same connection"})
    assert after["content"] == [{"type": "text", "text": "same connection"}], after
    assert await fresh_rogue.text("rg__pid") == pid, "the upstream was restarted"


async def test_an_ordinary_upstream_error_code_is_an_upstream_error(rogue: Rogue) -> None:
    result = await rogue.result("rg__plain_error", {"code": -32603})
    assert tool_error_code(result) == "upstream_error", result
    assert (await rogue.result("rg__echo", {"text": "next"}))["content"][0]["text"] == "next"


async def test_a_line_of_invalid_utf8_from_a_stdio_upstream_is_skipped(fresh_rogue: Rogue) -> None:
    """Strict decoding killed the SDK's stdio reader for good; calls then timed out until the
    heartbeat noticed."""
    pid = await fresh_rogue.text("rg__pid")
    result = await fresh_rogue.result("rg__invalid_utf8_stdout")
    assert result["content"] == [{"type": "text", "text": "after the invalid line"}], result
    assert (await fresh_rogue.result("rg__echo", {"text": "still"}))["content"][0]["text"] == "still"
    assert await fresh_rogue.text("rg__pid") == pid, "the upstream was restarted"


async def test_a_flood_of_list_changes_is_coalesced(fresh_rogue: Rogue) -> None:
    """Each notifications/tools/list_changed cost a full re-listing (and its warnings)."""
    await fresh_rogue.result("rg__notification_flood", {"count": 300})  # 100 of them are list changes
    seen, stable = -1, 0
    with anyio.fail_after(60):
        while stable < 5:  # until the re-listing it caused has settled
            count = int(await fresh_rogue.text("rg__listings"))
            stable, seen = (stable + 1, seen) if count == seen else (0, count)
            await anyio.sleep(0.1)
    # The listing at connect, the one the first change started, and at most one for the rest.
    assert 2 <= seen <= 3, f"{seen} tools/list requests for one burst of 100 list changes"


# -- the same faults over HTTP, where the SDK's transport answers some of them itself ------------

MALFORMED_OVER_HTTP = "its HTTP response body is not a valid JSON-RPC response"


@pytest.mark.parametrize("code", [-32000, -32001])
async def test_over_http_an_upstream_error_code_that_the_sdk_also_uses_is_the_upstreams(
    http_rogue: Rogue, code: int
) -> None:
    handshakes = await http_rogue.text("rh__handshakes")
    error = gateway_error(await http_rogue.result("rh__plain_error", {"code": code}))
    assert error["code"] == "upstream_error", error
    assert error["details"]["jsonrpc_code"] == code, error
    assert (await http_rogue.result("rh__echo", {"text": "next"}))["content"][0]["text"] == "next"
    assert await http_rogue.text("rh__handshakes") == handshakes, "the gateway reconnected"


@pytest.mark.parametrize(
    "tool", ["rh__result_not_object", "rh__result_null", "rh__bizarre_error", "rh__error_no_message"]
)
async def test_over_http_a_response_that_breaks_json_rpc_is_an_upstream_error(
    http_rogue: Rogue, tool: str
) -> None:
    """The SDK's HTTP transport answers the request itself, with -32700 "Failed to parse JSON
    response", which the gateway forwarded to the agent as if the agent's request had not parsed."""
    answer = await http_rogue.call(tool)
    assert "result" in answer, answer
    error = gateway_error(answer["result"])
    assert error["code"] == "upstream_error", error
    assert error["details"] == {"reason": "malformed_response", "fault": MALFORMED_OVER_HTTP}, error
    await http_rogue.others_are_served()


# -- results judged in the era they are read in --------------------------------------------------


async def test_a_result_valid_only_in_2026_reaches_a_2026_caller_and_is_an_error_for_a_2025_one(
    modern_rogue: Rogue,
) -> None:
    """2026-07-28 allows any JSON value in ``structuredContent``; 2025-11-25 wants an object. The
    SDK would answer the 2025-11-25 caller with a bare -32603."""
    modern = await modern_rogue.call("rm__structured_not_object", modern=True)
    assert modern["result"]["structuredContent"] == [1, 2, 3], modern
    assert modern["result"]["resultType"] == "complete", modern
    legacy = await modern_rogue.call("rm__structured_not_object")
    assert "result" in legacy, legacy
    error = gateway_error(legacy["result"])
    assert error["code"] == "upstream_error", error
    assert error["details"]["reason"] == "malformed_result", error


@pytest.mark.parametrize("modern", [True, False])
async def test_a_2026_upstreams_content_that_is_not_a_list_is_an_upstream_error(
    modern_rogue: Rogue, modern: bool
) -> None:
    """The SDK's 2026-07-28 result type accepts it as an input request and sends it on with its
    content stripped: an empty success."""
    answer = await modern_rogue.call("rm__content_not_list", modern=modern)
    assert "result" in answer, answer
    error = gateway_error(answer["result"])
    assert error["code"] == "upstream_error", error
    assert error["details"] == {
        "reason": "malformed_result",
        "fault": "content: Input should be a valid list",
    }
    result = await modern_rogue.result("rm__echo", {"text": "fine"})
    assert result["content"] == [{"type": "text", "text": "fine"}], result
