"""Web UI sessions: a signed, expiring cookie naming the admin, and the CSRF token bound to it.

The cookie is ``base64url(json{u: name, e: expiry, n: nonce}) "." base64url(mac)``, an HMAC-SHA256
whose key is derived from *that admin's own token*. The trade-off, chosen on purpose:

- a session survives a gateway restart and is valid on every replica that shares the config,
  without any session store;
- rotating (or removing) an admin's token ends all of that admin's sessions at once, which is the
  way to revoke a stolen cookie before it expires (logout only forgets the cookie in one browser);
- the key is as secret as the token itself; whoever holds the token is that admin anyway.

In open mode (no admin users, loopback only) ``local-admin`` sessions exist only to bind CSRF
tokens; their key is random per process, so a restart just issues a new cookie.

The CSRF token is an HMAC of the session's nonce under the same key: a page from another site can
neither read it nor compute it, and it changes with every login.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from gateway.config import AdminSettings
from gateway.core.clock import Clock
from gateway.web.identity import LOCAL_ADMIN, Admin, admin_of, find_user, local_admin, open_mode

SESSION_COOKIE = "interlock_admin"
SESSION_TTL_S = 12 * 3600.0
"""A working day plus an incident's overtime; then the token is asked for again."""
_SESSION_LABEL = b"interlock admin session v1"
_MAC_PREFIX = b"interlock.session.v1:"
_CSRF_PREFIX = b"interlock.csrf.v1:"


@dataclass(frozen=True, slots=True)
class Session:
    admin: Admin
    nonce: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, clock: Clock, ttl_s: float = SESSION_TTL_S) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self._local_key = secrets.token_bytes(32)

    def issue(self, settings: AdminSettings, admin: Admin) -> tuple[str, Session]:
        """A new session for ``admin``: the cookie value and what it stands for."""
        key = self._key(settings, admin.name)
        if key is None:
            raise ValueError(f"no admin named {admin.name!r} can hold a session")
        session = Session(admin, secrets.token_urlsafe(16), self.clock.wall() + self.ttl_s)
        body = _b64(
            json.dumps(
                {"u": admin.name, "e": session.expires, "n": session.nonce}, separators=(",", ":")
            ).encode()
        )
        return f"{body}.{_b64(self._mac(key, _MAC_PREFIX, body))}", session

    def open(self, settings: AdminSettings, cookie: str | None) -> Session | None:
        """The session a cookie stands for, if it is genuine, unexpired, and its admin still exists
        with the same token (under the current config); else None."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        try:
            doc = json.loads(_unb64(body))
            presented = _unb64(mac)
        except (ValueError, binascii.Error):
            return None
        if not isinstance(doc, dict):
            return None
        name, expires, nonce = doc.get("u"), doc.get("e"), doc.get("n")
        if not (isinstance(name, str) and isinstance(expires, int | float) and isinstance(nonce, str)):
            return None
        key = self._key(settings, name)
        if key is None or not hmac.compare_digest(presented, self._mac(key, _MAC_PREFIX, body)):
            return None
        if self.clock.wall() >= expires:
            return None
        return Session(self._admin(settings, name), nonce, float(expires))

    def csrf_token(self, settings: AdminSettings, session: Session) -> str:
        key = self._key(settings, session.admin.name)
        if key is None:  # the admin vanished from the config since the session was opened
            return ""
        return _b64(self._mac(key, _CSRF_PREFIX, session.nonce))

    def csrf_ok(self, settings: AdminSettings, session: Session, token: str | None) -> bool:
        expected = self.csrf_token(settings, session)
        return bool(token and expected) and hmac.compare_digest((token or "").encode(), expected.encode())

    # -- internals ------------------------------------------------------------------------------

    def _key(self, settings: AdminSettings, name: str) -> bytes | None:
        if open_mode(settings):
            return self._local_key if name == LOCAL_ADMIN else None
        user = find_user(settings, name)
        if user is None:
            return None
        return hmac.new(user.token.get_secret_value().encode(), _SESSION_LABEL, hashlib.sha256).digest()

    @staticmethod
    def _admin(settings: AdminSettings, name: str) -> Admin:
        user = find_user(settings, name)
        return admin_of(user) if user is not None else local_admin()

    @staticmethod
    def _mac(key: bytes, prefix: bytes, text: str) -> bytes:
        return hmac.new(key, prefix + text.encode(), hashlib.sha256).digest()
