"""The cheapest MCP upstream we can build with the SDK: one tool, `echo(text)`, returning the text.

    python -m bench.trivial_server --port 9001     # http://127.0.0.1:9001/mcp (both MCP eras)

Built on the lowlevel `mcp.server.Server` (no MCPServer decorators, no schema validation of the
arguments, no structured output) so that the upstream's own cost is as small as the SDK allows and
the benchmark measures the gateway, not the tool. With `--port 0` it picks a free port; either way
it prints `LISTENING <port>` once the socket accepts connections.

`GET /stats` returns counters the benchmark diffs around each phase, to check from the upstream's
side that the gateway does not pay a handshake per call: HTTP requests by verb, 2026-07-28 requests
by `Mcp-Method` header, 2025-11-25 POSTs without `Mcp-Session-Id` (= initialize handshakes), tool
calls served, and TCP connections seen. They only read headers, so they cost next to nothing.
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Ctx = ServerRequestContext[Any, Any]

ECHO = types.Tool(
    name="echo",
    description="Return `text` unchanged.",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
)
TOOLS = types.ListToolsResult(tools=[ECHO])


class Stats:
    def __init__(self) -> None:
        self.tool_calls = 0
        self.http: dict[str, int] = {}
        self.modern_methods: dict[str, int] = {}
        self.legacy_sessionless_posts = 0
        self.peers: set[tuple[str, int]] = set()

    def snapshot(self) -> dict[str, Any]:
        return {
            "tool_calls": self.tool_calls,
            "http_requests": dict(self.http),
            "modern_methods": dict(self.modern_methods),
            "legacy_sessionless_posts": self.legacy_sessionless_posts,
            "connections": len(self.peers),
        }


STATS = Stats()


class Counting:
    """ASGI wrapper that counts requests from their headers only (the body is left to the SDK)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp":
            verb = scope["method"]
            STATS.http[verb] = STATS.http.get(verb, 0) + 1
            client = scope.get("client")
            if client:
                STATS.peers.add((client[0], client[1]))
            if verb == "POST":
                method = session = None
                for name, value in scope["headers"]:
                    if name == b"mcp-method":
                        method = value.decode("latin-1")
                    elif name == b"mcp-session-id":
                        session = value
                if method is not None:
                    STATS.modern_methods[method] = STATS.modern_methods.get(method, 0) + 1
                elif session is None:
                    STATS.legacy_sessionless_posts += 1
        await self.app(scope, receive, send)


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(STATS.snapshot())


async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return TOOLS


async def call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    if params.name != "echo":
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"unknown tool {params.name!r}")], is_error=True
        )
    STATS.tool_calls += 1
    text = (params.arguments or {}).get("text", "")
    return types.CallToolResult(content=[types.TextContent(type="text", text=str(text))])


def build_server() -> Server[Any]:
    return Server("bench-trivial", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve(port: int) -> None:
    # One app serves both eras: 2025-11-25 (initialize + Mcp-Session-Id) and 2026-07-28 (stateless).
    app = Counting(build_server().streamable_http_app(custom_starlette_routes=[Route("/stats", stats)]))
    # Listen before printing, so a parent that reads the port (e.g. with --port 0) can connect at once.
    # IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto is IPPROTO_TCP,
    # and a bare socket(AF_INET, SOCK_STREAM) has proto 0. Without NODELAY, uvicorn's separate header
    # and body writes meet Nagle + delayed ACK and a kept-alive 2026-07-28 exchange waits ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    await uvicorn.Server(config).serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    args = parser.parse_args()
    anyio.run(serve, args.port)


if __name__ == "__main__":
    main()
