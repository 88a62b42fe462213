"""Who is calling, per request: a bearer token (REST), a session cookie (UI), or the loopback-only
``local-admin`` of a gateway without admin users."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.config import AdminSettings
from gateway.core.net import bearer_token, is_loopback_address
from gateway.web.identity import (
    CONFIGURE_USERS,
    Admin,
    find_by_token,
    is_loopback_host,
    local_admin,
    open_mode,
)


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a request may not use the admin plane, as an HTTP status and an error code."""

    status: int
    code: str
    message: str


def loopback_refusal(request: Request) -> Refused | None:
    """Open mode serves only a browser or script on this machine that calls it by a loopback name.

    Both are checked: the peer address stops the network, and the Host stops a DNS-rebinding page
    that reached 127.0.0.1 under its own name (and could otherwise read the page and post to it)."""
    peer = request.client.host if request.client else None
    if not is_loopback_address(peer):
        return Refused(403, "forbidden", CONFIGURE_USERS)
    if not is_loopback_host(request.headers.get("host")):
        return Refused(
            403,
            "forbidden",
            "without admin users the admin plane answers only to a loopback Host "
            "(127.0.0.1, localhost or [::1]); " + CONFIGURE_USERS.split("; ", 1)[1],
        )
    return None


def api_caller(request: Request, settings: AdminSettings) -> Admin | Refused:
    """The admin behind a REST request: ``Authorization: Bearer <admin token>``, or local-admin."""
    if open_mode(settings):
        return loopback_refusal(request) or local_admin()
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        return Refused(401, "unauthorized", "missing admin token: send 'Authorization: Bearer <admin token>'")
    admin = find_by_token(settings, token)
    if admin is None:
        return Refused(401, "unauthorized", "unknown admin token (admin tokens are not client API keys)")
    return admin
