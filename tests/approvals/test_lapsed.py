"""An approval that was granted but not spent before it expired: what the agent is told, and that
asking again works; and how the gate behaves before the gateway has its signing secret."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.approvals import ApprovalService
from gateway.approvals.gate import ApprovalGate
from gateway.approvals.requirement import ApprovalRequirement
from gateway.approvals.rounds import Rounds
from gateway.config import ApprovalSettings
from gateway.core import Caller, ToolCall, build_chain
from gateway.core import errors as e
from gateway.core.clock import ManualClock
from gateway.state.base import StateStore
from tests.calls import Recorder, policy_of, tool_call

pytestmark = pytest.mark.anyio

REQ = ApprovalRequirement(rule="big-refunds", timeout_s=60, mode="defer")


def _gate(store: StateStore, clock: ManualClock, rounds: Rounds | None = None) -> ApprovalGate:
    service = ApprovalService(store, clock)
    return ApprovalGate(
        service,
        clock,
        ApprovalSettings(),
        decide_url=lambda i: f"http://gw/admin/approvals/{i}",
        rounds=rounds or Rounds(service),
    )


def _call(req: ApprovalRequirement, *, modern: bool = False, **kw: Any) -> ToolCall:
    caller = Caller(
        principal="agent",
        session_key="s1",
        protocol_version="2026-07-28" if modern else "2025-11-25",
        capabilities={"elicitation": {}} if modern else {},
    )
    call = tool_call("crm", "refund", {"amount": 250}, policy=policy_of(approval=req), **kw)
    return call.with_changes(caller=caller)


async def _refused(gate: ApprovalGate, call: ToolCall, upstream: Recorder) -> e.GatewayError:
    with pytest.raises(e.GatewayError) as info:
        await build_chain([gate], upstream)(call)
    return info.value


async def test_an_approval_that_lapsed_unused_says_so_and_the_next_call_asks_anew(
    store: StateStore, clock: ManualClock
) -> None:
    gate = _gate(store, clock)
    upstream = Recorder()
    asked = await _refused(gate, _call(REQ), upstream)
    assert asked.code == "approval_required"
    approval_id = asked.details["approval_id"]
    await gate.service.decide(approval_id, True, by="alice")
    clock.advance(61)  # the agent comes back after the approval ran out

    lapsed = await _refused(gate, _call(REQ), upstream)
    assert lapsed.code == "approval_expired"
    assert "nobody decided" not in lapsed.message
    assert "approved by alice" in lapsed.message and "before the call ran" in lapsed.message
    assert lapsed.hint is not None and "was approved" in lapsed.hint and "Nobody approved" not in lapsed.hint
    assert lapsed.details["approval_id"] == approval_id
    assert lapsed.details["reason"] == "approved_but_expired"
    assert lapsed.details["approved_by"] == "alice"
    assert upstream.calls == []

    # The hint says a new call asks again: it must, rather than repeat the lapsed approval forever.
    again = await _refused(gate, _call(REQ), upstream)
    assert again.code == "approval_required"
    assert again.details["approval_id"] != approval_id


async def test_an_expired_undecided_request_still_says_nobody_decided(
    store: StateStore, clock: ManualClock
) -> None:
    gate = _gate(store, clock)
    upstream = Recorder()
    asked = await _refused(gate, _call(REQ), upstream)
    clock.advance(61)
    expired = await _refused(gate, _call(REQ), upstream)
    assert expired.code == "approval_expired"
    assert "nobody decided" in expired.message
    assert expired.details["approval_id"] == asked.details["approval_id"]


async def test_without_its_signing_secret_the_gate_refuses_round_trips_and_records_nothing(
    store: StateStore, clock: ManualClock
) -> None:
    # The gateway starts before the state store answers: no secret yet, so no signer.
    gate = _gate(store, clock)
    upstream = Recorder()
    elicit = ApprovalRequirement(rule="r", mode="elicit")
    refused = await _refused(gate, _call(elicit, modern=True), upstream)
    assert refused.code != "internal_error"
    assert refused.retryable and refused.details["reason"] == "approvals_not_ready"
    assert upstream.calls == []
    assert await gate.service.list() == []  # no orphan request left pending for a human
    # A state the gateway sealed earlier (before a restart) is refused the same way, not crashed on.
    resumed = _call(elicit, modern=True, extra={"requestState": "interlock.approval.x.y"})
    assert (await _refused(gate, resumed, upstream)).details["reason"] == "approvals_not_ready"
    # Deferred approvals need no signature: they work meanwhile.
    assert (await _refused(gate, _call(REQ), upstream)).code == "approval_required"
