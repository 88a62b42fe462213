"""The approval gate in a real chain on a manual clock: when it asks, and how it carries an approved
call through its upstream's own input requests without asking a human twice."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.approvals import ApprovalService, StateSigner
from gateway.approvals.gate import ApprovalGate
from gateway.approvals.requirement import ApprovalRequirement
from gateway.approvals.rounds import INPUT_KEY, PREFIX, Rounds
from gateway.config import ApprovalSettings, compile_expression
from gateway.core import Caller, ToolCall, ToolResult, build_chain
from gateway.core import errors as e
from gateway.core.clock import ManualClock
from gateway.guards.traits import Traits
from gateway.state import MemoryStateStore
from gateway.state.base import StateStore, StoreUnavailable
from tests.calls import Recorder, policy_of, tool_call

pytestmark = pytest.mark.anyio

DESTRUCTIVE = {"readOnlyHint": False, "destructiveHint": True}


def _gate(store: StateStore, clock: ManualClock) -> tuple[ApprovalGate, ApprovalService]:
    service = ApprovalService(store, clock)
    rounds = Rounds(service)
    rounds.signer = StateSigner(b"s" * 32, clock, store)
    gate = ApprovalGate(
        service,
        clock,
        ApprovalSettings(),
        decide_url=lambda i: f"http://gw/admin/approvals/{i}",
        rounds=rounds,
    )
    return gate, service


def _call(
    req: ApprovalRequirement | None, *, trust: bool = False, modern: bool = False, **kw: Any
) -> ToolCall:
    policy = policy_of(approval=req, traits=Traits(trust_annotations=trust))
    caller = Caller(
        principal="agent",
        session_key="s1",
        protocol_version="2026-07-28" if modern else "2025-11-25",
        capabilities={"elicitation": {}} if modern else {},
    )
    return tool_call("crm", "refund", {"amount": 250}, policy=policy, **kw).with_changes(caller=caller)


async def _refused(gate: ApprovalGate, call: ToolCall, upstream: Recorder) -> e.GatewayError:
    with pytest.raises(e.GatewayError) as info:
        await build_chain([gate], upstream)(call)
    return info.value


@pytest.mark.parametrize(
    ("req", "trust", "annotations", "asks"),
    [
        (None, False, DESTRUCTIVE, False),
        (ApprovalRequirement(rule="r"), False, {}, True),
        (ApprovalRequirement(rule="r", destructive_only=True), True, DESTRUCTIVE, True),
        (ApprovalRequirement(rule="r", destructive_only=True), True, {}, True),  # the spec's defaults
        (ApprovalRequirement(rule="r", destructive_only=True), True, {"readOnlyHint": True}, False),
        (ApprovalRequirement(rule="r", destructive_only=True), True, {"destructiveHint": False}, False),
        # An untrusted server's hints decide nothing: it could call a deletion read-only.
        (ApprovalRequirement(rule="r", destructive_only=True), False, DESTRUCTIVE, False),
    ],
)
async def test_when_the_gate_asks(
    store: StateStore,
    clock: ManualClock,
    req: ApprovalRequirement | None,
    trust: bool,
    annotations: dict[str, Any],
    asks: bool,
) -> None:
    gate, _ = _gate(store, clock)
    upstream = Recorder()
    call = _call(req, trust=trust, annotations=annotations)
    if asks:
        assert (await _refused(gate, call, upstream)).code == "approval_required"
        assert upstream.calls == []
    else:
        await build_chain([gate], upstream)(call)
        assert len(upstream.calls) == 1


async def test_a_condition_that_fails_asks_rather_than_lets_through(
    store: StateStore, clock: ManualClock
) -> None:
    gate, _ = _gate(store, clock)
    when = compile_expression("args.missing > 100")
    req = ApprovalRequirement(rule="r", when=when, when_source="args.missing > 100")
    assert (await _refused(gate, _call(req), Recorder())).code == "approval_required"


async def test_loop_reasons_ask_even_without_an_approval_rule(store: StateStore, clock: ManualClock) -> None:
    gate, service = _gate(store, clock)
    error = await _refused(gate, _call(None, approval_reasons=("loop detected: x",)), Recorder())
    record = await service.get(error.details["approval_id"])
    assert (record.rule, record.reason) == ("loops", "loop detected: x")


async def test_an_approved_call_answers_its_upstreams_questions_without_asking_again(
    store: StateStore, clock: ManualClock
) -> None:
    gate, service = _gate(store, clock)
    req = ApprovalRequirement(rule="r")
    asked_upstream = ToolResult(
        {
            "resultType": "input_required",
            "inputRequests": {"q": {"method": "elicitation/create", "params": {"message": "color?"}}},
            "requestState": "upstream-own-state",
        }
    )
    upstream = Recorder(asked_upstream)
    chain = build_chain([gate], upstream)
    first = await chain(_call(req, modern=True))
    assert first.input_required and str(first.raw["requestState"]).startswith(PREFIX)
    answer = {"action": "accept", "content": {"decision": "approve"}}
    second = await chain(
        _call(
            req,
            modern=True,
            extra={"inputResponses": {INPUT_KEY: answer}, "requestState": first.raw["requestState"]},
        )
    )
    # The upstream asked its own question: passed on, its state wrapped in ours.
    assert second.raw["inputRequests"] == asked_upstream.raw["inputRequests"]
    wrapped = str(second.raw["requestState"])
    assert wrapped.startswith(PREFIX) and wrapped != "upstream-own-state"
    upstream.result = ToolResult.of_text("done")
    third = await chain(
        _call(
            req, modern=True, extra={"inputResponses": {"q": {"action": "accept"}}, "requestState": wrapped}
        )
    )
    assert third.text() == "done"
    # The upstream saw its own state back, untouched, and never our answer key.
    assert upstream.calls[-1].extra == {
        "inputResponses": {"q": {"action": "accept"}},
        "requestState": "upstream-own-state",
    }
    assert INPUT_KEY not in upstream.calls[1].extra.get("inputResponses", {})
    assert len([r for r in await service.list() if r.status == "used"]) == 1  # one human, one approval


class DownStore(MemoryStateStore):
    """A store that has gone away: every read and write fails fast, as Redis's client does."""

    async def update(self, key: str, updater: Any, *, ttl_s: float) -> Any:
        raise StoreUnavailable("connection refused")

    async def get(self, key: str) -> dict[str, Any] | None:
        raise StoreUnavailable("connection refused")


async def test_a_gated_call_never_runs_while_the_records_are_unreachable(clock: ManualClock) -> None:
    gate, _ = _gate(DownStore(clock), clock)
    upstream = Recorder()
    with pytest.raises(e.GatewayError) as refused:
        await build_chain([gate], upstream, names=["approval"])(_call(ApprovalRequirement(rule="r")))
    error = refused.value
    assert (error.code, error.retryable, error.refused_by) == ("state_unavailable", True, "approval")
    assert upstream.calls == []
    await build_chain([gate], upstream)(_call(None))  # calls no rule gates are not affected
    assert len(upstream.calls) == 1
