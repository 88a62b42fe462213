"""Raw JSON-RPC over HTTP, for tests that must send what no SDK client would, and read every byte back."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2

LEGACY, MODERN = "2025-11-25", "2026-07-28"
INFO = {"name": "raw", "version": "1"}
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": INFO,
}
BASE_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def request(method: str, params: dict[str, Any] | None = None, rid: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        message["params"] = params
    return message


def call(tool: str, arguments: Any, *, modern: bool = False, rid: Any = 1) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if modern:
        params["_meta"] = dict(META)
    return request("tools/call", params, rid)


def open_session(url: str) -> str:
    """A 2025-11-25 session, opened by hand (blocking: call it from a thread in async code)."""
    init = request("initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": INFO})
    with httpx2.Client(timeout=10) as client:
        response = client.post(url, content=json.dumps(init), headers=BASE_HEADERS)
        session = str(response.headers["mcp-session-id"])
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        client.post(url, content=json.dumps(done), headers=legacy_headers(session))
    return session


def legacy_headers(session: str) -> dict[str, str]:
    return {**BASE_HEADERS, "MCP-Protocol-Version": LEGACY, "Mcp-Session-Id": session}


def header_safe(value: object) -> bool:
    return isinstance(value, str) and value.isascii() and value.isprintable()


def modern_headers(message: Any) -> dict[str, str]:
    """The routing headers a 2026-07-28 client derives from its body (where the body has them)."""
    headers = {**BASE_HEADERS, "MCP-Protocol-Version": MODERN}
    if isinstance(message, dict) and header_safe(message.get("method")):
        headers["Mcp-Method"] = message["method"]
        params = message.get("params")
        name = params.get("name", params.get("uri")) if isinstance(params, dict) else None
        if header_safe(name):
            headers["Mcp-Name"] = name
    return headers


async def post(
    client: httpx2.AsyncClient, url: str, body: bytes | str, headers: dict[str, str]
) -> httpx2.Response:
    with anyio.fail_after(30):
        return await client.post(url, content=body, headers=headers)


def messages(response: httpx2.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response: one JSON body, or the data lines of an SSE stream."""
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith(("application/json", "text/event-stream")), (
        response.status_code,
        content_type,
        response.text[:300],
    )
    if content_type.startswith("application/json"):
        return [json.loads(response.text)]
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


def final(response: httpx2.Response) -> dict[str, Any]:
    """The last message of a response: the answer to the request that was posted."""
    found = messages(response)
    assert found, (response.status_code, response.text[:300])
    return found[-1]


def jsonrpc_error(response: httpx2.Response, code: int) -> dict[str, Any]:
    """The JSON-RPC error of a refused request, checked for its shape and code."""
    (message,) = messages(response)
    assert message["jsonrpc"] == "2.0" and "id" in message, message
    error = message["error"]
    assert error["code"] == code, message
    assert isinstance(error["message"], str) and error["message"], message
    return dict(message)


def tool_error_code(result: dict[str, Any]) -> str:
    """The gateway's error code in a tools/call result (the JSON of its first text block)."""
    assert result.get("isError") is True, result
    return str(json.loads(result["content"][0]["text"])["error"]["code"])
