"""The 2026-07-28 approval round trip: ``input_required`` out, the client's answer back in.

In that era a server does not hold a call open while a human thinks: it answers ``input_required``
with an elicitation form and a ``requestState``, and the client calls again with the answer and the
state. The gateway's state is sealed by ``StateSigner`` (HMAC, bound to the client, to a digest of
the tool and its arguments, and to an expiry; one use) and marked with ``PREFIX``, so the gate can
tell its own state from an upstream's, which travels byte for byte as before.

An approved call may itself get ``input_required`` from its upstream. Its retry must not ask a human
again, so the upstream's result is passed on with the upstream's state wrapped inside a sealed
"continue" state of ours; the retry opens it, and the upstream gets its own state back untouched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.approvals.form import approval_form, read_answer
from gateway.approvals.records import ApprovalRecord, canonical_digest
from gateway.approvals.service import ApprovalService, DecisionConflict, UnknownApproval
from gateway.approvals.signing import ExpiredState, StateError, StateSigner
from gateway.core import CallNext, ToolCall, ToolResult
from gateway.core import errors as e

PREFIX = "interlock.approval."
"""Marks a ``requestState`` the gateway sealed; an upstream's never starts with it by accident
(and if one did, its signature would not verify and the call would be refused, not misrouted)."""
INPUT_KEY = "interlock_approval"
"""The gateway's key in ``inputRequests`` / ``inputResponses``; upstream keys pass untouched."""
CONTINUE_TTL_S = 3600.0
"""How long an approved call's client has to answer its upstream's own input requests."""

Decided = Callable[[ToolCall, CallNext, ApprovalRecord], Awaitable[ToolResult]]


def call_digest(call: ToolCall) -> str:
    """What a sealed state is bound to: the exposed tool and the canonical arguments."""
    raw = f"{call.exposed_name}\x00{canonical_digest(call.arguments)}".encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class Rounds:
    def __init__(self, service: ApprovalService) -> None:
        self.service = service
        self.signer: StateSigner | None = None
        """Set when the gateway starts (its secret may live in the state store)."""

    def _signer(self) -> StateSigner:
        if self.signer is None:
            raise e.InternalError("the approval state signer is not ready")
        return self.signer

    def owns(self, call: ToolCall) -> bool:
        state = call.extra.get("requestState")
        return isinstance(state, str) and state.startswith(PREFIX)

    def _seal(self, call: ToolCall, payload: dict[str, Any], ttl_s: float) -> str:
        token = self._signer().seal(
            payload, client=call.caller.principal, call_digest=call_digest(call), ttl_s=max(1.0, ttl_s)
        )
        return PREFIX + token

    def first(self, call: ToolCall, record: ApprovalRecord, form: dict[str, Any]) -> ToolResult:
        """The ``input_required`` result that asks the client's human."""
        ttl_s = record.expires - self.service.clock.wall()
        return ToolResult(
            {
                "resultType": "input_required",
                "inputRequests": {INPUT_KEY: {"method": "elicitation/create", "params": form}},
                "requestState": self._seal(call, {"a": record.id}, ttl_s),
            }
        )

    async def resume(self, call: ToolCall, call_next: CallNext, decided: Decided) -> ToolResult:
        """The retry of a round trip: verify and spend our state, then decide or continue."""
        token = str(call.extra["requestState"])[len(PREFIX) :]
        try:
            payload = await self._signer().open(
                token, client=call.caller.principal, call_digest=call_digest(call)
            )
        except ExpiredState as exc:
            raise e.ApprovalExpired(
                f"the approval round trip for {call.exposed_name} expired ({exc}); the call did not run",
                details={"reason": "request_state_expired"},
            ) from exc
        except StateError as exc:
            raise e.Forbidden(
                f"requestState refused: {exc}; the call did not run",
                hint=(
                    "Send the requestState exactly as the gateway returned it, once, with the same "
                    "tool and arguments; or call the tool again without it to ask anew."
                ),
                details={"reason": "request_state_refused"},
            ) from exc
        responses = call.extra.get("inputResponses")
        responses = dict(responses) if isinstance(responses, dict) else {}
        answer = responses.pop(INPUT_KEY, None)
        extra = {k: v for k, v in call.extra.items() if k not in ("requestState", "inputResponses")}
        if responses:
            extra["inputResponses"] = responses
        if "a" not in payload:  # an approved call answering its upstream's own questions
            if "u" in payload:
                extra["requestState"] = payload["u"]
            return await self.forward(call.with_changes(extra=extra), call_next)
        approval_id = str(payload["a"])
        record = await self._answer(call, approval_id, answer)
        if record.status == "pending":  # retried without an answer: ask again, same request
            return self.first(call, record, approval_form(record))
        return await decided(call.with_changes(extra=extra), call_next, record)

    async def _answer(self, call: ToolCall, approval_id: str, answer: Any) -> ApprovalRecord:
        if answer is None:
            return await self.service.get(approval_id)
        approved, comment = read_answer(answer)
        try:
            return await self.service.decide(
                approval_id, approved, by=f"client:{call.caller.principal}", comment=comment
            )
        except DecisionConflict as conflict:  # decided out of band first: that decision stands
            return conflict.record
        except UnknownApproval as exc:
            raise e.ApprovalExpired(
                f"approval {approval_id} is gone (expired long ago); the call did not run",
                details={"approval_id": approval_id},
            ) from exc

    async def forward(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        """Run an approved call; if its upstream asks for input, keep the approval for the retry."""
        result = await call_next(call)
        if not result.input_required:
            return result
        raw = dict(result.raw)
        payload: dict[str, Any] = {"k": "continue"}
        if "requestState" in raw:
            payload["u"] = raw["requestState"]
        raw["requestState"] = self._seal(call, payload, CONTINUE_TTL_S)
        return ToolResult(raw, result.notes)
