"""Small facts about HTTP peers and credentials, shared by the client plane (``/mcp``) and the
admin plane (``/admin``), which must agree on them."""

from __future__ import annotations

import ipaddress


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def is_loopback_address(address: str | None) -> bool:
    """Whether a peer address (the ASGI ``client`` host) is on this machine."""
    if not address:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def http_origin(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def local_origin(host: str, port: int) -> str:
    """Where a process on this machine reaches a server listening on ``host:port``: one that
    listens on every address (``0.0.0.0``, ``::``, empty) is reached on loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return http_origin(host, port)
