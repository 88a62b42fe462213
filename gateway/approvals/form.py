"""The question a human answers about one call, and how their answer is read.

The same form serves both eras: sent as ``elicitation/create`` on the call's stream (2025-11-25) or
inside an ``input_required`` result (2026-07-28).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.approvals.records import ApprovalRecord


def approval_form(record: ApprovalRecord) -> dict[str, Any]:
    """The elicitation a human answers: approve or deny, with an optional comment."""
    args = json.dumps(record.args_redacted, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    minutes = max(1, round((record.expires - record.created) / 60))
    return {
        "mode": "form",
        "message": (
            f"Approval needed: {record.tool} (server {record.server}) wants to run with\n{args}\n"
            f"Rule {record.rule}: {record.reason}\n"
            f"Approval {record.id}; undecided within {minutes} min means denied."
        ),
        "requestedSchema": {
            "type": "object",
            "properties": {
                "decision": {
                    "type": "string",
                    "title": "Decision",
                    "enum": ["approve", "deny"],
                    "description": "Approve to let this exact call run once; deny to refuse it.",
                },
                "comment": {"type": "string", "title": "Comment", "maxLength": 1000},
            },
            "required": ["decision"],
        },
    }


def read_answer(answer: Any) -> tuple[bool, str | None]:
    """(approved, comment) from an ElicitResult; anything but an explicit approve is a denial."""
    if not isinstance(answer, Mapping) or answer.get("action") != "accept":
        action = answer.get("action") if isinstance(answer, Mapping) else None
        return False, f"the user chose {action!r} in the client" if action else None
    content = answer.get("content")
    content = content if isinstance(content, Mapping) else {}
    comment = content.get("comment")
    comment = comment[:1000] if isinstance(comment, str) and comment.strip() else None
    return content.get("decision") == "approve", comment
