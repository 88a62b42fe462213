"""Whose calls loop detection adds up, for stateless (2026-07-28) clients.

Every HTTP client here is the Python SDK's default ``Client(url)``, which negotiates 2026-07-28
with the gateway: no MCP session, so the gateway must find the caller some other way (a session
hint, else the HTTP connection). The CRM example runs over stdio behind a real ``interlock serve``;
the last test runs ``interlock stdio`` under a client instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.support import ROOT, Proc, gateway, gateway_error, stdio_server_toml

pytestmark = pytest.mark.anyio

A, B, C = "C000110", "C000111", "C000112"

POLICY = """
[[rules]]
name = "small-budget"
match = { tools = ["crm__search_customers"] }
loops = { max_calls_per_tool_per_session = 2 }
"""


def _setup(tmp: Path) -> tuple[str, Path]:
    """The CRM example's servers.toml entry (recording what reaches it) and the test policies."""
    record = tmp / "crm.jsonl"
    (tmp / "policies").mkdir()
    (tmp / "policies" / "default.toml").write_text((ROOT / "policies" / "default.toml").read_text())
    (tmp / "policies" / "50-test.toml").write_text(POLICY)
    crm = stdio_server_toml(
        "crm", str(ROOT / "examples" / "crm_server.py"), extra=f'env = {{ EXAMPLE_RECORD_FILE = "{record}" }}'
    )
    return crm, record


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Path]]:
    tmp = tmp_path_factory.mktemp("loop-identity")
    crm, record = _setup(tmp)
    with gateway(crm, tmp) as gw:
        yield gw, record


def _reached(record: Path) -> int:
    return len(record.read_text().splitlines()) if record.exists() else 0


async def _get(client: Client, customer: str, **kwargs: Any) -> Any:
    return await client.call_tool("crm__get_customer", {"customer_id": customer}, **kwargs)


async def _clients(stack: AsyncExitStack, url: str, n: int) -> list[Client]:
    clients = [await stack.enter_async_context(Client(url)) for _ in range(n)]
    assert all(c.protocol_version == "2026-07-28" for c in clients)
    return clients


async def test_separate_stateless_clients_never_add_up(stack: tuple[Proc, Path]) -> None:
    gw, _ = stack
    with anyio.fail_after(60):
        async with AsyncExitStack() as open_clients:
            agents = await _clients(open_clients, gw.mcp_url, 4)
            # Four agents, each looking up the same two customers once: A-B-A-B-A-B-A-B in all.
            results = [await _get(agent, customer) for agent in agents for customer in (A, B)]
    for result in results:
        assert not result.is_error, gateway_error(result)
    assert [r.structured_content["customer_id"] for r in results] == [A, B] * 4


async def test_one_client_that_really_loops_is_still_stopped(stack: tuple[Proc, Path]) -> None:
    gw, record = stack
    with anyio.fail_after(60):
        async with Client(gw.mcp_url) as agent:
            assert agent.protocol_version == "2026-07-28"
            for _ in range(3):
                for customer in (A, B):
                    assert not (await _get(agent, customer)).is_error
            before = _reached(record)
            looped = await _get(agent, A)
    error = gateway_error(looped)
    assert error["code"] == "loop_detected" and error["details"]["kind"] == "cycle"
    assert error["details"]["count"] == 3
    assert _reached(record) == before, "the looping call never reached the upstream"


async def test_clients_that_name_one_conversation_add_up(stack: tuple[Proc, Path]) -> None:
    """A session hint (header or ``_meta``) makes several clients one conversation again."""
    gw, _ = stack
    hinted = httpx2.AsyncClient(headers={"Mcp-Session-Hint": "conversation-7"})
    meta = {"interlock/session": "conversation-7"}
    with anyio.fail_after(60):
        async with (
            hinted,
            Client(streamable_http_client(gw.mcp_url, http_client=hinted)) as first,
            Client(gw.mcp_url) as second,
        ):
            for _ in range(3):
                assert not (await _get(first, C)).is_error
                assert not (await _get(second, A, meta=meta)).is_error
            looped = await _get(first, C)
            other = await _get(second, A, meta={"interlock/session": "conversation-8"})
    assert gateway_error(looped)["details"]["kind"] == "cycle"
    assert not other.is_error, "another conversation has its own history"


async def test_budgets_count_conversations_not_connections(stack: tuple[Proc, Path]) -> None:
    gw, _ = stack
    meta = {"interlock/session": "budgeted"}
    with anyio.fail_after(60):
        async with Client(gw.mcp_url) as agent:
            search = [await agent.call_tool("crm__search_customers", {"query": q}, meta=meta) for q in "abc"]
            unhinted = [await agent.call_tool("crm__search_customers", {"query": q}) for q in "abc"]
    assert [r.is_error for r in search] == [False, False, True]
    error = gateway_error(search[2])
    assert error["code"] == "call_budget_exceeded" and error["details"]["kind"] == "tool_budget"
    # Without a hint the gateway sees a connection, not a conversation: no budget to hold it to.
    assert [r.is_error for r in unhinted] == [False, False, False]


async def test_calls_through_a_proxy_are_not_attributed(stack: tuple[Proc, Path]) -> None:
    """Behind a reverse proxy the connection is the proxy's, shared by whoever it forwards."""
    gw, _ = stack
    proxied = httpx2.AsyncClient(headers={"X-Forwarded-For": "127.0.0.1"})
    with anyio.fail_after(60):
        async with proxied, Client(streamable_http_client(gw.mcp_url, http_client=proxied)) as agent:
            results = [await _get(agent, customer) for customer in (B, C) * 4]
    assert not any(r.is_error for r in results)


async def test_over_stdio_the_process_is_the_connection(tmp_path: Path) -> None:
    crm, _ = _setup(tmp_path)
    (tmp_path / "servers.toml").write_text(crm)
    command = ["-m", "gateway.cli", "stdio", "--config", str(tmp_path / "servers.toml")]
    params = StdioServerParameters(command=sys.executable, args=command, cwd=str(ROOT))
    meta = {"interlock/session": "chat-1"}
    with anyio.fail_after(60):
        async with Client(params, mode="2026-07-28") as agent:
            searches = [await agent.call_tool("crm__search_customers", {"query": q}) for q in "abc"]
            hinted = [await agent.call_tool("crm__search_customers", {"query": q}, meta=meta) for q in "abc"]
            for _ in range(3):
                for customer in (A, B):
                    assert not (await _get(agent, customer)).is_error
            looped = await _get(agent, A)
    assert not any(r.is_error for r in searches), "a process is no conversation to budget"
    assert [r.is_error for r in hinted] == [False, False, True]
    assert gateway_error(hinted[2])["code"] == "call_budget_exceeded"
    assert gateway_error(looped)["details"]["kind"] == "cycle", "but its loops are its own"
