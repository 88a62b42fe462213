"""Connections to upstream MCP servers: transports, supervision, era detection, error translation."""

from gateway.upstream.pool import UpstreamPool
from gateway.upstream.supervisor import Health, Supervisor

__all__ = ["Health", "Supervisor", "UpstreamPool"]
