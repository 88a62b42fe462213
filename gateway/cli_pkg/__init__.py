"""``interlock``: serve the gateway, or check a config without starting it."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import anyio

from gateway.config import Config, ConfigError, load_config

log = logging.getLogger("interlock")


def _setup_logging(level: str) -> None:
    # Always stderr: in stdio mode stdout carries the protocol.
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import Gateway

    config = _load(args.config)
    settings = config.gateway
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    if args.host or args.port is not None:
        config = config.model_copy(
            update={"gateway": settings.model_copy(update={"host": host, "port": port})}
        )
    _setup_logging(config.gateway.log_level)
    gateway = Gateway(config)
    uv = uvicorn.Config(
        gateway.http_app(),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(uv)
    server.run()
    return 0


def cmd_stdio(args: argparse.Namespace) -> int:
    from mcp.server.stdio import stdio_server

    from gateway.app import Gateway

    config = _load(args.config)
    _setup_logging(config.gateway.log_level)
    gateway = Gateway(config)

    async def main() -> None:
        async with gateway.running(), stdio_server() as (read, write):
            await gateway.server.run(read, write, gateway.server.create_initialization_options())

    anyio.run(main)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    print(f"{args.config}: ok ({len(config.servers)} servers)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlock", description="An MCP gateway with guarded tool calls.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve MCP over Streamable HTTP at /mcp")
    serve.add_argument("--config", default="servers.toml")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)
    stdio = sub.add_parser("stdio", help="serve MCP over stdio")
    stdio.add_argument("--config", default="servers.toml")
    stdio.set_defaults(func=cmd_stdio)
    check = sub.add_parser("check", help="validate the config and exit")
    check.add_argument("--config", default="servers.toml")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
