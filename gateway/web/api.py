"""The admin REST API under ``/admin/api/``: list, show, approve and deny approvals; gateway status.

JSON in and out; errors in the gateway's one shape, ``{"error": {"code", "message", "details"}}``.
Authenticated by ``Authorization: Bearer <admin token>`` (never a cookie, so a page in the admin's
browser cannot ride on a session), or as the loopback-only ``local-admin`` without admin users.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.approvals import UnknownApproval
from gateway.approvals.records import STATUSES
from gateway.state.base import StoreUnavailable
from gateway.web.access import Refused, api_caller
from gateway.web.backend import AdminBackend
from gateway.web.decisions import DecisionRefused, approval_json, decide_as
from gateway.web.identity import Admin
from gateway.web.security import cross_origin_refusal, harden

log = logging.getLogger("interlock.admin")

MAX_BODY_BYTES = 16 * 1024
RECENT_DEFAULT = 50
RECENT_MAX = 200

Handler = Callable[[Request, Admin], Awaitable[Response]]


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    response = JSONResponse({"error": body}, status_code=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="interlock-admin"'
    return harden(response)


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class AdminApi:
    def __init__(self, backend: AdminBackend) -> None:
        self.backend = backend

    def routes(self) -> list[BaseRoute]:
        base = "/admin/api"
        return [
            Route(f"{base}/approvals", self._guarded(self.list_approvals), methods=["GET"]),
            Route(f"{base}/approvals/{{id}}", self._guarded(self.show_approval), methods=["GET"]),
            Route(f"{base}/approvals/{{id}}/approve", self._guarded(self.approve), methods=["POST"]),
            Route(f"{base}/approvals/{{id}}/deny", self._guarded(self.deny), methods=["POST"]),
            Route(f"{base}/status", self._guarded(self.status), methods=["GET"]),
            # Last: any other path under the API answers in the API's own error shape.
            Route(
                f"{base}/{{rest:path}}", _unknown_endpoint, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]
            ),
        ]

    # -- endpoints ------------------------------------------------------------------------------

    async def list_approvals(self, request: Request, admin: Admin) -> Response:
        status = request.query_params.get("status") or None
        if status is not None and status not in STATUSES:
            raise BadRequest(
                400, "bad_request", f"unknown status {status!r}; use one of {', '.join(STATUSES)}"
            )
        records = await self.backend.approvals.list(status)
        now = self._now()
        return JSONResponse({"approvals": [approval_json(record, now) for record in records]})

    async def show_approval(self, request: Request, admin: Admin) -> Response:
        try:
            record = await self.backend.approvals.get(request.path_params["id"])
        except UnknownApproval as exc:
            raise DecisionRefused(404, "not_found", str(exc)) from exc
        return JSONResponse(approval_json(record, self._now()))

    async def approve(self, request: Request, admin: Admin) -> Response:
        return await self._decide(request, admin, approve=True)

    async def deny(self, request: Request, admin: Admin) -> Response:
        return await self._decide(request, admin, approve=False)

    async def status(self, request: Request, admin: Admin) -> Response:
        limit = _int_param(request, "limit", RECENT_DEFAULT, 1, RECENT_MAX)
        pending = await self.backend.approvals.list("pending")
        return JSONResponse(
            {
                "public_url": self.backend.public_url(),
                "approvals": {"pending": len(pending)},
                "upstreams": [asdict(view) for view in self.backend.upstreams()],
                "circuits": [asdict(view) for view in self.backend.circuits()],
                "recent_calls": [asdict(call) for call in self.backend.recent_calls(limit)],
            }
        )

    # -- plumbing -------------------------------------------------------------------------------

    async def _decide(self, request: Request, admin: Admin, *, approve: bool) -> Response:
        comment = await _read_comment(request)
        record = await decide_as(self.backend, admin, request.path_params["id"], approve, comment)
        log.info("approval %s %s by %s (REST)", record.id, record.status, admin.name)
        return JSONResponse(approval_json(record, self._now()))

    def _now(self) -> float:
        return self.backend.approvals.clock.wall()

    def _guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """The checks every endpoint shares: same origin for writes, then who is calling; and
        one error shape for every refusal, including the unexpected ones."""

        async def endpoint(request: Request) -> Response:
            why_not = cross_origin_refusal(request, self.backend.admin.public_url)
            if why_not is not None:
                return error_response(403, "forbidden", why_not)
            caller = api_caller(request, self.backend.admin)
            if isinstance(caller, Refused):
                return error_response(caller.status, caller.code, caller.message)
            try:
                return harden(await handler(request, caller))
            except DecisionRefused as exc:
                return error_response(exc.status, exc.code, exc.message, exc.details)
            except BadRequest as exc:
                return error_response(exc.status, exc.code, exc.message)
            except StoreUnavailable as exc:  # the records are out of reach: say so, decide nothing
                return error_response(
                    503, "state_store_unavailable", f"the approval records cannot be reached ({exc})"
                )
            except Exception:
                incident = secrets.token_hex(6)
                log.exception(
                    "admin API %s %s failed (incident %s)", request.method, request.url.path, incident
                )
                return error_response(
                    500,
                    "internal_error",
                    f"the admin API failed; see the gateway log for incident {incident}",
                )

        return endpoint


async def _unknown_endpoint(request: Request) -> Response:
    return error_response(404, "not_found", f"no admin API endpoint {request.method} {request.url.path}")


async def _read_comment(request: Request) -> str | None:
    """The optional ``{"comment": "..."}`` of a decision.

    A body must be JSON and say so: a cross-site HTML form can send only urlencoded, multipart or
    text/plain bodies, so requiring ``application/json`` (or no body at all) keeps forms out even
    where no token is needed (open mode on loopback)."""
    content_type = request.headers.get("content-type")
    body = await _read_body(request)
    if content_type is not None:
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise BadRequest(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    elif body.strip():
        raise BadRequest(415, "unsupported_media_type", "a body needs Content-Type: application/json")
    if not body.strip():
        return None
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise BadRequest(400, "bad_request", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest(400, "bad_request", 'the body must be a JSON object, e.g. {"comment": "..."}')
    unknown = sorted(set(doc) - {"comment"})
    if unknown:
        raise BadRequest(400, "bad_request", f"unknown field(s) {', '.join(unknown)}; only 'comment' is read")
    comment = doc.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise BadRequest(400, "bad_request", "comment must be a string")
    return comment


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(413, "payload_too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(413, "payload_too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
    return body


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not (low <= int(raw) <= high):
        raise BadRequest(400, "bad_request", f"{name} must be an integer from {low} to {high}")
    return int(raw)
