"""The HTTP edge: DNS-rebinding protection, body limit, client identity, health and metrics."""

from __future__ import annotations

import http.client
import json
import urllib.request
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client

from tests.e2e.conftest import Stack
from tests.support import FIXTURE_SERVER, gateway, http_get, stdio_server_toml

pytestmark = pytest.mark.anyio

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers={**HEADERS, **headers}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_bad_origin_header_is_refused(stack: Stack) -> None:
    status, _ = _post(stack.gateway.mcp_url, json.dumps(INIT).encode(), {"Origin": "http://evil.example"})
    assert status == 403
    ok, _ = _post(stack.gateway.mcp_url, json.dumps(INIT).encode(), {"Origin": "http://localhost:3000"})
    assert ok == 200


def test_a_bad_host_header_is_refused(stack: Stack) -> None:
    status, _ = _post(stack.gateway.mcp_url, json.dumps(INIT).encode(), {"Host": "attacker.example"})
    assert status in (403, 421)


def test_an_oversized_body_is_refused_and_the_gateway_keeps_serving(stack: Stack) -> None:
    # Announce a body over the limit and send none of it: the gateway must refuse on the header alone,
    # without reading (or buffering) what a hostile client would send.
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway.port, timeout=10)
    conn.putrequest("POST", "/mcp")
    for name, value in HEADERS.items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(50_000_000))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    conn.close()
    assert _post(stack.gateway.mcp_url, json.dumps(INIT).encode(), {})[0] == 200


def test_malformed_json_rpc_gets_a_structured_error(stack: Stack) -> None:
    status, body = _post(stack.gateway.mcp_url, b"{not json", {})
    assert status == 400
    assert json.loads(body)["error"]["code"] == -32700
    assert _post(stack.gateway.mcp_url, json.dumps(INIT).encode(), {})[0] == 200


async def test_health_readiness_and_metrics(stack: Stack) -> None:
    with anyio.fail_after(20):
        async with Client(stack.gateway.mcp_url, mode="legacy") as c:
            await c.call_tool("fs__echo", {"text": "count me"})
    assert http_get(f"{stack.gateway.url}/healthz")[0] == 200
    status, body = http_get(f"{stack.gateway.url}/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    _, metrics = http_get(f"{stack.gateway.url}/metrics")
    for sid in ("fs", "fl", "fh"):
        assert f'interlock_upstream_up{{server="{sid}"}} 1.0' in metrics
        assert f'interlock_upstream_restarts_total{{server="{sid}"}}' in metrics
    assert "interlock_tool_call_duration_seconds_bucket" in metrics
    assert 'interlock_tool_calls_total{outcome="ok",server="fs",tool="echo"}' in metrics


async def test_api_keys_identify_clients_and_refuse_strangers(tmp_path: Path) -> None:
    key = "k-" + "a" * 30
    config = f'[gateway]\n[[gateway.clients]]\nname = "support-bot"\nkey = "{key}"\n\n' + stdio_server_toml(
        "fs", FIXTURE_SERVER, "--name", "fs"
    )
    with gateway(config, tmp_path) as gw:
        assert _post(gw.mcp_url, json.dumps(INIT).encode(), {})[0] == 401
        assert _post(gw.mcp_url, json.dumps(INIT).encode(), {"Authorization": "Bearer wrong-key"})[0] == 401
        assert _post(gw.mcp_url, json.dumps(INIT).encode(), {"Authorization": f"Bearer {key}"})[0] == 200
        client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"})
        from mcp.client.streamable_http import streamable_http_client

        with anyio.fail_after(20):
            async with (
                client,
                Client(streamable_http_client(gw.mcp_url, http_client=client), mode="legacy") as c,
            ):
                result = await c.call_tool("fs__echo", {"text": "authorized"})
        assert result.structured_content == {"text": "authorized"}
