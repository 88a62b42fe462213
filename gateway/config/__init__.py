"""Configuration of the gateway: the models of servers.toml and the loader that fills them.

This package depends only on pydantic and the standard library, so that anything above it
(upstreams, guards, the CLI's `check`) can import it without pulling in the runtime.
"""

from gateway.config.errors import ConfigError, Problem
from gateway.config.interpolate import expand, interpolate
from gateway.config.loader import load_config
from gateway.config.models import (
    ClientKey,
    Config,
    GatewaySettings,
    HttpServer,
    RestartPolicy,
    Server,
    ServerBase,
    StdioServer,
)

__all__ = [
    "ClientKey",
    "Config",
    "ConfigError",
    "GatewaySettings",
    "HttpServer",
    "Problem",
    "RestartPolicy",
    "Server",
    "ServerBase",
    "StdioServer",
    "expand",
    "interpolate",
    "load_config",
]
