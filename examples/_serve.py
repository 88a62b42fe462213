"""How every example server starts: stdio by default, or Streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable

import anyio
import uvicorn
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
    if args.transport == "http":
        app = mcp.streamable_http_app()
        anyio.run(serve_http, wrap(app) if wrap else app, args.port)
    else:
        anyio.run(mcp.run_stdio_async)
