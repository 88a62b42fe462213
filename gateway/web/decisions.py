"""Taking a decision on behalf of an admin, the same way for the REST API and the web UI."""

from __future__ import annotations

from typing import Any

from gateway.approvals import ApprovalExpired, ApprovalRecord, DecisionConflict, UnknownApproval
from gateway.web.backend import AdminBackend
from gateway.web.identity import Admin, refusal

MAX_COMMENT = 2_000
"""Characters; a comment is a note for the agent's user and the audit trail, not a document."""


class DecisionRefused(Exception):
    """A decision that was not taken, with the HTTP status and error code that say why."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def time_left_s(record: ApprovalRecord, now: float) -> float:
    """Seconds until the record's expiry while that still matters (pending: to decide; approved:
    to run the call); 0 once it is final."""
    if record.status not in ("pending", "approved"):
        return 0.0
    return round(max(0.0, record.expires - now), 1)


def approval_json(record: ApprovalRecord, now: float) -> dict[str, Any]:
    return {**record.to_json(), "time_left_s": time_left_s(record, now)}


def clean_comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise DecisionRefused(400, "bad_request", f"comment is longer than {MAX_COMMENT} characters")
    return comment or None


async def decide_as(
    backend: AdminBackend, admin: Admin, approval_id: str, approve: bool, comment: str | None
) -> ApprovalRecord:
    """Decide ``approval_id`` as ``admin`` if they are among its approvers, through the backend
    (which counts the decision); refusals become ``DecisionRefused``."""
    comment = clean_comment(comment)
    try:
        record = await backend.approvals.get(approval_id)
    except UnknownApproval as exc:
        raise DecisionRefused(404, "not_found", str(exc)) from exc
    why_not = refusal(admin, record)
    if why_not is not None:
        raise DecisionRefused(403, "forbidden", why_not, {"approvers": record.approvers})
    try:
        return await backend.decide(approval_id, approve, by=admin.name, comment=comment)
    except UnknownApproval as exc:
        raise DecisionRefused(404, "not_found", str(exc)) from exc
    except ApprovalExpired as exc:  # before DecisionConflict: it is one
        raise DecisionRefused(409, "approval_expired", str(exc), _conflict_details(exc)) from exc
    except DecisionConflict as exc:
        raise DecisionRefused(409, "conflict", str(exc), _conflict_details(exc)) from exc


def _conflict_details(exc: DecisionConflict) -> dict[str, Any]:
    return {
        "status": exc.status,
        "decided_by": exc.decided_by,
        "decided_at": exc.record.decided_at,
        "comment": exc.record.comment,
    }
