"""Human approval gates: durable approval records, the service that decides them exactly once, and
the signed ``requestState`` that carries an approval through a 2026-07-28 ``input_required`` round trip.

The gate (``gate.py``) joins the guard chain through ``GuardDeps.approval``; the 2026-07-28 round
trip lives in ``rounds.py``, the question in ``form.py``, announcements in ``webhook.py``.
docs/approvals.md describes the whole.
"""

from __future__ import annotations

from gateway.approvals.records import (
    REDACTED,
    ApprovalRecord,
    ApprovalStatus,
    canonical_digest,
    redact,
)
from gateway.approvals.service import (
    ApprovalError,
    ApprovalExpired,
    ApprovalService,
    DecisionConflict,
    UnknownApproval,
)
from gateway.approvals.signing import (
    ExpiredState,
    ReplayedState,
    StateError,
    StateSigner,
    TamperedState,
)

__all__ = [
    "REDACTED",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalRecord",
    "ApprovalService",
    "ApprovalStatus",
    "DecisionConflict",
    "ExpiredState",
    "ReplayedState",
    "StateError",
    "StateSigner",
    "TamperedState",
    "UnknownApproval",
    "canonical_digest",
    "redact",
]
