"""``interlock``: serve the gateway, or check a config without starting it."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import anyio

from gateway.cli.approvals import register as register_approvals
from gateway.config import Config, ConfigError, load_config

log = logging.getLogger("interlock")


def _setup_logging(level: str) -> None:
    # Always stderr: in stdio mode stdout carries the protocol.
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One INFO line per upstream HTTP request is noise at the gateway's rate, and costs time.
    for noisy in ("httpx2", "httpx", "mcp.server.streamable_http", "mcp.server.streamable_http_manager"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


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
    from gateway.pipeline import load_policies

    config = _load(args.config)
    try:
        policies = load_policies(config.policies_dir) if config.policies_dir else None
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    rules = f", {len(policies.rules)} policy rules in {len(policies.files)} files" if policies else ""
    print(f"{args.config}: ok ({len(config.servers)} servers{rules})")
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from gateway.cli.policy import cmd_explain

    return cmd_explain(args, _load(args.config))


def cmd_pins(args: argparse.Namespace) -> int:
    from gateway.cli.pins import cmd_pins as run

    return run(args, _load(args.config))


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
    pins = sub.add_parser("pins", help="review tool definitions that changed upstream")
    pins.add_argument("--config", default="servers.toml")
    pins_sub = pins.add_subparsers(dest="pins_command", required=True)
    pins_sub.add_parser("list", help="show every pinned tool and whether it changed")
    accept = pins_sub.add_parser("accept", help="accept a changed tool definition")
    accept.add_argument("tool", help="exposed tool name, e.g. crm__refund")
    for p in (pins_sub.choices["list"], accept):
        p.add_argument("--config", default=argparse.SUPPRESS)
    pins.set_defaults(func=cmd_pins)
    policy = sub.add_parser("policy", help="inspect the policy")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    explain = policy_sub.add_parser("explain", help="show the rules and resolved policy for one tool")
    explain.add_argument("tool", help="exposed tool name, e.g. crm__refund")
    explain.add_argument("--args", default="{}", help="call arguments as JSON, for `when` conditions")
    explain.add_argument("--client", default="anonymous", help="client name (from [[gateway.clients]])")
    explain.add_argument("--config", default="servers.toml")
    explain.set_defaults(func=cmd_policy)
    register_approvals(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
