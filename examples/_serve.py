"""How every example server starts: stdio by default, or Streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import uvicorn
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp


async def serve_http(app: ASGIApp, port: int) -> None:
    # Listen before printing, so a caller that reads the port (e.g. with --port 0) can connect at once.
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says TCP, and without it kept-alive responses wait ~40 ms for Nagle.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    await uvicorn.Server(uvicorn.Config(app, log_level="warning")).serve(sockets=[sock])


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def _record_calls(
    path: str,
) -> Callable[[ServerRequestContext[Any, Any], CallNext], Awaitable[HandlerResult]]:
    """Append one JSON line per tools/call received: demos and tests use it to show what reached us."""

    async def record(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call":
            params = ctx.params or {}
            line = json.dumps({"tool": params.get("name"), "arguments": params.get("arguments")}, default=str)
            await anyio.to_thread.run_sync(_append, path, line)
        return await call_next(ctx)

    return record


def main(
    mcp: MCPServer,
    description: str | None,
    default_port: int,
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
) -> None:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=default_port, help="0 picks a free port")
    args = parser.parse_args()
    if record_to := os.environ.get("EXAMPLE_RECORD_FILE"):
        mcp.middleware.insert(0, _record_calls(record_to))
    if args.transport == "http":
        app = mcp.streamable_http_app()
        anyio.run(serve_http, wrap(app) if wrap else app, args.port)
    else:
        anyio.run(mcp.run_stdio_async)
