"""``interlock``: serve the gateway, or check a config without starting it."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from gateway import __version__
from gateway.cli.approvals import register as register_approvals
from gateway.config import Config, ConfigError, load_config
from gateway.config.loader import with_overrides
from gateway.core.net import http_origin, local_origin

if TYPE_CHECKING:
    import socket

    import uvicorn

    from gateway.app import Gateway

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


def _gateway(config: Config) -> Gateway:
    from gateway.app import Gateway

    try:
        return Gateway(config)
    except ConfigError as exc:  # e.g. a state file in a folder this user cannot write
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None


def _overridden(config: Config, args: argparse.Namespace) -> Config:
    """The config with the command line's --host/--port, validated exactly as the file's values."""
    given = {"host": args.host, "port": args.port}
    values = {key: value for key, value in given.items() if value is not None}
    try:
        return with_overrides(config, "gateway", values, flags={k: f"--{k}" for k in values})
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    config = _overridden(_load(args.config), args)
    _setup_logging(config.gateway.log_level)
    gateway = _gateway(config)
    uv = uvicorn.Config(
        gateway.http_app(),
        host=config.gateway.host,
        port=config.gateway.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    _server(uv, on_bound=gateway.serving).run()
    return 0


def _server(config: uvicorn.Config, *, on_bound: Callable[[list[str]], None]) -> uvicorn.Server:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, telling the gateway where it listens once the sockets are bound
        (uvicorn runs the lifespan, and so the gateway's start-up, before it binds)."""

        def __init__(self, config: uvicorn.Config, *, on_bound: Callable[[list[str]], None]) -> None:
            super().__init__(config)
            self._on_bound = on_bound

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                bound = [sock.getsockname() for server in self.servers for sock in server.sockets]
                self._on_bound([_mcp_url(address) for address in bound])

    return Server(config, on_bound=on_bound)


def _mcp_url(address: Any) -> str:
    return f"{http_origin(address[0], address[1])}/mcp"


def cmd_stdio(args: argparse.Namespace) -> int:
    from mcp.server.stdio import stdio_server

    config = _load(args.config)
    _setup_logging(config.gateway.log_level)
    gateway = _gateway(config)

    async def main() -> None:
        async with gateway.running(), stdio_server() as (read, write):
            gateway.serving(["stdio"])
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


def cmd_health(args: argparse.Namespace) -> int:
    """Ask a running gateway whether it is alive (or ready): exit 0 if so, 1 if not."""
    import urllib.error
    import urllib.request

    base = args.url
    if base is None:
        settings = _overridden(_load(args.config), args).gateway
        base = local_origin(settings.host, settings.port)
    url = f"{base.rstrip('/')}/{'readyz' if args.ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1


def cmd_policy(args: argparse.Namespace) -> int:
    from gateway.cli.policy import cmd_explain

    return cmd_explain(args, _load(args.config))


def cmd_pins(args: argparse.Namespace) -> int:
    from gateway.cli.pins import cmd_pins as run

    return run(args, _load(args.config))


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


_CONFIG_HELP = "the servers.toml to read; relative paths inside it are relative to its folder"


def _subcommand(sub: Any, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=description or help[:1].upper() + help[1:] + ".", formatter_class=_Help
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interlock", description="An MCP gateway with guarded tool calls.", formatter_class=_Help
    )
    parser.add_argument("--version", action="version", version=f"interlock {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = _subcommand(
        sub,
        "serve",
        "serve MCP over Streamable HTTP at /mcp",
        "Serve MCP over Streamable HTTP at /mcp, with /healthz, /readyz, /metrics and /admin beside it.",
    )
    serve.add_argument("--config", default="servers.toml", help=_CONFIG_HELP)
    serve.add_argument("--host", help="address to listen on (default: [gateway] host, 127.0.0.1 if unset)")
    serve.add_argument(
        "--port",
        type=int,
        help="TCP port to listen on, 0 for any free one (default: [gateway] port, 8080 if unset)",
    )
    serve.set_defaults(func=cmd_serve)
    stdio = _subcommand(sub, "stdio", "serve MCP over stdin/stdout, for a client that starts the gateway")
    stdio.add_argument("--config", default="servers.toml", help=_CONFIG_HELP)
    stdio.set_defaults(func=cmd_stdio)
    health = _subcommand(
        sub,
        "health",
        "ask a running gateway whether it is alive (exit 0) or not (exit 1)",
        "Ask a running gateway's /healthz (or /readyz) whether it is alive (exit 0) or not (exit 1); "
        "a container's health check. The address is the config's [gateway] host and port, "
        "unless --url, --host or --port say otherwise.",
    )
    health.add_argument("--config", default="servers.toml", help=_CONFIG_HELP)
    health.add_argument(
        "--url", help="the gateway's base URL, e.g. http://127.0.0.1:8080 (default: from the config)"
    )
    health.add_argument("--host", help="the host to ask (default: [gateway] host; 0.0.0.0 means 127.0.0.1)")
    health.add_argument("--port", type=int, help="the port to ask (default: [gateway] port)")
    health.add_argument(
        "--ready", action="store_true", help="ask /readyz: healthy only when every required upstream is up"
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    health.set_defaults(func=cmd_health)
    check = _subcommand(sub, "check", "validate the config and the policies, then exit")
    check.add_argument("--config", default="servers.toml", help=_CONFIG_HELP)
    check.set_defaults(func=cmd_check)
    pins = _subcommand(sub, "pins", "review tool definitions that changed upstream")
    pins.add_argument("--config", default="servers.toml", help=_CONFIG_HELP)
    pins_sub = pins.add_subparsers(dest="pins_command", required=True)
    _subcommand(pins_sub, "list", "show every pinned tool and whether it changed")
    accept = _subcommand(pins_sub, "accept", "accept a changed tool definition")
    accept.add_argument("tool", help="exposed tool name, e.g. crm__refund")
    for p in (pins_sub.choices["list"], accept):
        p.add_argument("--config", default=argparse.SUPPRESS, help=_CONFIG_HELP + " (default: servers.toml)")
    pins.set_defaults(func=cmd_pins)
    policy = _subcommand(sub, "policy", "inspect the policy")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    explain = _subcommand(policy_sub, "explain", "show the rules and resolved policy for one tool")
    explain.add_argument("tool", help="exposed tool name, e.g. crm__refund")
    explain.add_argument("--args", default="{}", help="call arguments as JSON, for `when` conditions")
    explain.add_argument("--client", default="anonymous", help="client name (from [[gateway.clients]])")
    explain.add_argument("--config", default="servers.toml", help=_CONFIG_HELP)
    explain.set_defaults(func=cmd_policy)
    register_approvals(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
