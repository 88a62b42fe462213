"""Who is using the admin plane, and whether they may decide a given approval.

Admins are the ``[[admin.users]]`` of servers.toml, each with a bearer token (never a client key:
an agent must not be able to approve its own calls). With no users configured the admin plane is
open to loopback only, as ``local-admin``: a laptop or a single box needs no token, while a gateway
reachable over the network never runs an unauthenticated admin plane.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from gateway.approvals import ApprovalRecord
from gateway.config import AdminSettings, AdminUser
from gateway.core.net import is_loopback_address

LOCAL_ADMIN = "local-admin"
CLIENT_APPROVER = "client"
"""In an approval's ``approvers``, the human at the agent's own MCP client, not an admin."""
CONFIGURE_USERS = (
    "the admin plane is open only to loopback while no admin users are configured; "
    "add [[admin.users]] (name, token) to servers.toml to reach it from elsewhere"
)


@dataclass(frozen=True, slots=True)
class Admin:
    name: str
    """Recorded as ``decided_by``."""
    groups: tuple[str, ...] = ()
    local: bool = False
    """The anonymous loopback admin of a gateway without admin users."""


def open_mode(settings: AdminSettings) -> bool:
    """No admin users: loopback callers are ``local-admin`` without a token."""
    return not settings.users


def local_admin() -> Admin:
    return Admin(LOCAL_ADMIN, (), local=True)


def admin_of(user: AdminUser) -> Admin:
    return Admin(user.name, tuple(user.groups))


def find_by_token(settings: AdminSettings, token: str) -> Admin | None:
    """The admin holding ``token``. Every token is compared, so the timing tells nothing about
    which one (or how much of one) matched."""
    presented = token.encode()
    found: AdminUser | None = None
    for user in settings.users:
        if hmac.compare_digest(presented, user.token.get_secret_value().encode()) and found is None:
            found = user
    return admin_of(found) if found is not None else None


def find_user(settings: AdminSettings, name: str) -> AdminUser | None:
    return next((user for user in settings.users if user.name == name), None)


def is_loopback_host(host_header: str | None) -> bool:
    """Whether a ``Host`` header names this machine by a loopback name.

    Open mode checks this besides the peer address: a DNS-rebinding page (``evil.example``
    resolving to 127.0.0.1) reaches the gateway from loopback, but with its own name as Host."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if host == "localhost":
        return True
    return is_loopback_address(host)


def admin_approvers(record: ApprovalRecord) -> list[str]:
    """The names and groups an admin must match to decide; empty means any admin."""
    return [name for name in record.approvers if name != CLIENT_APPROVER]


def refusal(admin: Admin, record: ApprovalRecord) -> str | None:
    """Why ``admin`` may not decide ``record``, or None if they may.

    An empty ``approvers`` list lets any admin decide. Otherwise the admin's name or one of their
    groups must be listed; ``client`` alone means only the agent's own human may decide."""
    if not record.approvers:
        return None
    wanted = admin_approvers(record)
    if not wanted:
        return (
            f"approval {record.id} may be decided only by the human at the agent's own client "
            "(approvers = ['client'])"
        )
    if admin.name in wanted or any(group in wanted for group in admin.groups):
        return None
    who = admin.name + (f" (groups: {', '.join(admin.groups)})" if admin.groups else " (no groups)")
    return f"{who} may not decide approval {record.id}; its approvers are: {', '.join(wanted)}"
