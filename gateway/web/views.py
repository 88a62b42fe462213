"""The admin web UI: the dashboard at ``/admin``, one approval's page, login and logout, and the
form POST that approves or denies (works without JavaScript; redirects back with a message).

Browsers authenticate with a session cookie (HttpOnly, SameSite=Strict, path /admin) issued at
login; every POST also carries a CSRF token bound to that session, and must come from this
gateway's own origin. Without admin users, loopback browsers get a ``local-admin`` session without
logging in (the cookie exists only to bind the CSRF token).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.approvals import UnknownApproval
from gateway.web import page
from gateway.web.access import loopback_refusal
from gateway.web.assets import ASSETS
from gateway.web.backend import AdminBackend
from gateway.web.decisions import DecisionRefused, decide_as
from gateway.web.identity import find_by_token, local_admin, open_mode
from gateway.web.panels import DECIDED_SHOWN, Snapshot, Viewer
from gateway.web.security import cross_origin_refusal, harden
from gateway.web.sessions import SESSION_COOKIE, Session, Sessions

log = logging.getLogger("interlock.admin")

FLASH_COOKIE = "interlock_flash"
MAX_FORM_BYTES = 16 * 1024
RECENT_SHOWN = 40
DECIDED_READ = 4 * DECIDED_SHOWN
"""Newest records read for the "recently decided" panel: enough that a burst of fresh pending
requests or of used approvals still leaves the panel full."""
_NEXT = re.compile(r"^/admin(/approvals/[A-Za-z0-9_-]{1,64})?$")
"""Where a login may send the browser next: the dashboard or one approval, never elsewhere."""


@dataclass(frozen=True, slots=True)
class Visit:
    session: Session
    csrf: str
    new_cookie: str | None = None
    """Set when this request opened the session (open mode's automatic local-admin session)."""

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.session.admin, self.csrf)


class AdminUi:
    def __init__(self, backend: AdminBackend) -> None:
        self.backend = backend
        self.sessions = Sessions(backend.approvals.clock)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin", self.dashboard, methods=["GET"]),
            Route("/admin/", self.dashboard, methods=["GET"]),
            Route("/admin/panels", self.panels, methods=["GET"]),
            Route("/admin/approvals/{id}", self.approval, methods=["GET"]),
            Route("/admin/approvals/{id}/decide", self.decide, methods=["POST"]),
            Route("/admin/login", self.login, methods=["GET", "POST"]),
            Route("/admin/logout", self.logout, methods=["POST"]),
            Route("/admin/static/{name}", self.static, methods=["GET"]),
        ]

    # -- pages ----------------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        visit = self._visit(request)
        if isinstance(visit, Response):
            return visit
        snap = await self._snapshot()
        html = page.dashboard(snap, visit.viewer, _read_flash(request))
        return self._finish(HTMLResponse(html), visit, clear_flash=FLASH_COOKIE in request.cookies)

    async def panels(self, request: Request) -> Response:
        visit = self._visit(request, redirect=False)
        if isinstance(visit, Response):
            return visit
        snap = await self._snapshot()
        return self._finish(HTMLResponse(page.panels(snap, visit.viewer)), visit)

    async def approval(self, request: Request) -> Response:
        visit = self._visit(request)
        if isinstance(visit, Response):
            return visit
        try:
            record = await self.backend.approvals.get(request.path_params["id"])
        except UnknownApproval as exc:
            return self._finish(_error(404, str(exc)), visit)
        html = page.approval_page(record, self._now(), visit.viewer, _read_flash(request))
        return self._finish(HTMLResponse(html), visit, clear_flash=FLASH_COOKIE in request.cookies)

    async def static(self, request: Request) -> Response:
        asset = ASSETS.get(request.path_params["name"])
        if asset is None:
            return harden(Response("not found", status_code=404, media_type="text/plain"))
        response = Response(asset.body, media_type=asset.media_type)
        return harden(response, cache="public, max-age=31536000, immutable")

    # -- actions --------------------------------------------------------------------------------

    async def decide(self, request: Request) -> Response:
        approval_id = request.path_params["id"]
        posted = await self._posted_form(request)
        if isinstance(posted, Response):
            return posted
        visit, form, csrf_ok = posted
        back = f"/admin/approvals/{quote(approval_id)}" if form.get("back") == "detail" else "/admin"
        if not csrf_ok:
            # A stale tab (the gateway restarted, or the user logged in again elsewhere): nothing
            # was decided; the reloaded page carries a fresh token.
            flash = page.Flash(
                "bad", "Nothing was decided: the form had expired. Check the request and try again."
            )
            return self._redirect(back, visit, flash)
        decision = form.get("decision")
        if decision not in ("approve", "deny"):
            return self._redirect(back, visit, page.Flash("bad", "Choose Approve or Deny."))
        try:
            record = await decide_as(
                self.backend, visit.session.admin, approval_id, decision == "approve", form.get("comment")
            )
        except DecisionRefused as exc:
            tone = "warn" if exc.status == 409 else "bad"
            return self._redirect(back, visit, page.Flash(tone, exc.message))
        log.info("approval %s %s by %s (web UI)", record.id, record.status, visit.session.admin.name)
        verb = "Approved" if record.status == "approved" else "Denied"
        text = f"{verb} {record.tool} (request {record.id}) from {record.client}."
        return self._redirect(back, visit, page.Flash("ok" if record.status == "approved" else "warn", text))

    async def login(self, request: Request) -> Response:
        settings = self.backend.admin
        if open_mode(settings):  # nothing to log in to: loopback is local-admin already
            return harden(RedirectResponse("/admin", status_code=303))
        if request.method == "GET":
            return _html(page.login_page(_safe_next(request.query_params.get("next"))))
        refused = self._post_refusal(request)
        if refused is not None:
            return refused
        form = await _read_form(request) or {}
        next_path = _safe_next(form.get("next"))
        admin = find_by_token(settings, (form.get("token") or "").strip())
        if admin is None:
            log.warning("admin login refused from %s", request.client.host if request.client else "?")
            html = page.login_page(next_path, "Unknown admin token. (Client API keys are not admin tokens.)")
            return _html(html, status=401)
        cookie, _ = self.sessions.issue(settings, admin)
        response = RedirectResponse(next_path, status_code=303)
        self._set_session(request, response, cookie)
        log.info("admin %s logged in to the web UI", admin.name)
        return harden(response)

    async def logout(self, request: Request) -> Response:
        posted = await self._posted_form(request)
        if isinstance(posted, Response):
            return posted
        visit, _, csrf_ok = posted
        if not csrf_ok:
            return self._redirect("/admin", visit, page.Flash("bad", "The form had expired; try again."))
        response = RedirectResponse("/admin/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/admin", httponly=True, samesite="strict")
        return harden(response)

    # -- plumbing -------------------------------------------------------------------------------

    async def _posted_form(self, request: Request) -> tuple[Visit, dict[str, str], bool] | Response:
        """A form post from a signed-in page: (the visit, the form, whether its CSRF token holds),
        or the response that turns a cross-site post or a missing session away."""
        refused = self._post_refusal(request)
        if refused is not None:
            return refused
        visit = self._visit(request)
        if isinstance(visit, Response):
            return visit
        form = await _read_form(request) or {}
        return visit, form, self.sessions.csrf_ok(self.backend.admin, visit.session, form.get("csrf"))

    def _visit(self, request: Request, *, redirect: bool = True) -> Visit | Response:
        """The session behind this request, or the response that turns it away (the login page
        for a browser, a bare 401 for the panels' script)."""
        settings = self.backend.admin
        if open_mode(settings):
            refused = loopback_refusal(request)
            if refused is not None:
                return _error(refused.status, refused.message)
        session = self.sessions.open(settings, request.cookies.get(SESSION_COOKIE))
        new_cookie = None
        if session is None and open_mode(settings):
            new_cookie, session = self.sessions.issue(settings, local_admin())
        if session is None:
            if not redirect:
                return harden(Response("session ended", status_code=401, media_type="text/plain"))
            target = request.url.path if request.method == "GET" else "/admin"
            return harden(RedirectResponse(f"/admin/login?next={quote(_safe_next(target))}", status_code=303))
        return Visit(session, self.sessions.csrf_token(settings, session), new_cookie)

    def _post_refusal(self, request: Request) -> Response | None:
        why_not = cross_origin_refusal(request, self.backend.admin.public_url)
        return _error(403, why_not) if why_not is not None else None

    def _finish(self, response: Response, visit: Visit, *, clear_flash: bool = False) -> Response:
        if visit.new_cookie is not None:
            self._set_session_cookie(response, visit.new_cookie, secure=False)
        if clear_flash:
            response.delete_cookie(FLASH_COOKIE, path="/admin", httponly=True, samesite="strict")
        return harden(response)

    def _redirect(self, path: str, visit: Visit, flash: page.Flash) -> Response:
        response = RedirectResponse(path, status_code=303)
        payload = base64.urlsafe_b64encode(json.dumps({"t": flash.tone, "m": flash.text}).encode()).decode()
        response.set_cookie(
            FLASH_COOKIE, payload, max_age=60, path="/admin", httponly=True, samesite="strict"
        )
        return self._finish(response, visit)

    def _set_session(self, request: Request, response: Response, cookie: str) -> None:
        public = self.backend.admin.public_url or ""
        secure = request.url.scheme == "https" or public.startswith("https://")
        self._set_session_cookie(response, cookie, secure=secure)

    def _set_session_cookie(self, response: Response, cookie: str, *, secure: bool) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(self.sessions.ttl_s),
            path="/admin",
            httponly=True,
            samesite="strict",
            secure=secure,
        )

    async def _snapshot(self) -> Snapshot:
        # Every few seconds per open page: read the pending requests and the newest others only,
        # not every record the store keeps for the audit trail.
        approvals = self.backend.approvals
        pending = await approvals.list("pending")
        newest = await approvals.list(limit=len(pending) + DECIDED_READ)
        return Snapshot(
            now=self._now(),
            # The one that runs out first comes first: that is the one to look at now.
            pending=sorted(pending, key=lambda r: r.expires),
            decided=[r for r in newest if r.status != "pending"],
            upstreams=self.backend.upstreams(),
            circuits=self.backend.circuits(),
            calls=self.backend.recent_calls(RECENT_SHOWN),
        )

    def _now(self) -> float:
        return self.backend.approvals.clock.wall()


def _html(html: str, status: int = 200) -> Response:
    return harden(HTMLResponse(html, status_code=status))


def _error(status: int, message: str) -> Response:
    return _html(page.error_page(status, message), status)


def _safe_next(path: str | None) -> str:
    return path if path and _NEXT.match(path) else "/admin"


def _read_flash(request: Request) -> page.Flash | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(doc, dict) or doc.get("t") not in ("ok", "warn", "bad"):
        return None
    return page.Flash(str(doc["t"]), str(doc.get("m", ""))[:500])


async def _read_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form (what a plain HTML form posts), first value per field; None if it is
    something else or too large."""
    content_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in fields.items()}
