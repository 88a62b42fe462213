"""Configuration of the gateway: the models of servers.toml and the loader that fills them.

This package depends only on pydantic and the standard library, so that anything above it
(upstreams, guards, the CLI's `check`) can import it without pulling in the runtime.
"""

from gateway.config.cel import CelError, Expression, compile_expression
from gateway.config.errors import ConfigError, Problem
from gateway.config.interpolate import expand, interpolate
from gateway.config.loader import load_config
from gateway.config.models import (
    AdminSettings,
    AdminUser,
    ApprovalSettings,
    ClientKey,
    Config,
    GatewaySettings,
    HttpServer,
    RestartPolicy,
    Server,
    ServerBase,
    StdioServer,
    WebhookSettings,
)
from gateway.config.policy import ExplainStep, PolicyContext, PolicyLanguage, PolicySet, explain_text
from gateway.config.policy_loader import PolicyError

__all__ = [
    "AdminSettings",
    "AdminUser",
    "ApprovalSettings",
    "CelError",
    "ClientKey",
    "Config",
    "ConfigError",
    "ExplainStep",
    "Expression",
    "GatewaySettings",
    "HttpServer",
    "PolicyContext",
    "PolicyError",
    "PolicyLanguage",
    "PolicySet",
    "Problem",
    "RestartPolicy",
    "Server",
    "ServerBase",
    "StdioServer",
    "WebhookSettings",
    "compile_expression",
    "expand",
    "explain_text",
    "interpolate",
    "load_config",
]
