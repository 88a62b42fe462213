"""The approval record: canonical digests, redaction, JSON round trip, status as of a time."""

from __future__ import annotations

import json

import pytest

from gateway.approvals import REDACTED, ApprovalRecord, canonical_digest, redact
from tests.calls import tool_call


def test_digest_is_canonical() -> None:
    a = canonical_digest({"b": 1, "a": {"y": [1, 2], "x": "é"}})
    b = canonical_digest({"a": {"x": "é", "y": [1, 2]}, "b": 1})
    assert a == b and a.startswith("sha256:") and len(a) == 7 + 64
    assert canonical_digest({"b": 2}) != canonical_digest({"b": 1})
    assert canonical_digest(None) == canonical_digest({})


def test_redaction_is_recursive_and_case_insensitive() -> None:
    args = {
        "amount": 120,
        "Password": "hunter2",
        "api_key": "k",
        "nested": {"AccessToken": "t", "list": [{"client_secret": "s", "ok": 1}], "note": "keep"},
        "headers": {"Authorization": "Bearer x", "Set-Cookie": "c", "x-credentials": {"a": 1}},
    }
    out = redact(args)
    assert out == {
        "amount": 120,
        "Password": REDACTED,
        "api_key": REDACTED,
        "nested": {"AccessToken": REDACTED, "list": [{"client_secret": REDACTED, "ok": 1}], "note": "keep"},
        "headers": {"Authorization": REDACTED, "Set-Cookie": REDACTED, "x-credentials": REDACTED},
    }
    assert args["Password"] == "hunter2"  # the input is untouched


def test_record_round_trips_through_json() -> None:
    record = ApprovalRecord(
        id="abc",
        server="crm",
        tool="crm__refund",
        args_digest=canonical_digest({"amount": 5}),
        client="agent",
        session="s1",
        rule="refunds",
        reason="amount > 100",
        created=10.0,
        expires=20.0,
        args_redacted={"amount": 5},
    )
    again = ApprovalRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record
    with pytest.raises(ValueError, match="unknown status"):
        ApprovalRecord.from_json({**record.to_json(), "status": "maybe"})


def test_status_as_of_a_time_and_matching() -> None:
    call = tool_call("crm", "refund", {"amount": 5})
    record = ApprovalRecord(
        "abc", "crm", "crm__refund", canonical_digest({"amount": 5}), "agent", "s1", "r", "why", 10.0, 20.0
    )
    assert record.status_at(19.9) == "pending"
    assert record.status_at(20.0) == "expired"
    assert record.as_of(25.0).status == "expired"
    assert record.matches(call)
    assert not record.matches(tool_call("crm", "refund", {"amount": 6}))
    assert not record.matches(tool_call("crm", "refund", {"amount": 5}, principal="other"))
    assert not record.matches(tool_call("crm", "delete", {"amount": 5}))
