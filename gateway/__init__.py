"""Interlock: an MCP gateway that runs every tool call through guards."""

__version__ = "0.1.0"
