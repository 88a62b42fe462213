"""The approval gate: the guard that stops a call until a human has approved it.

It stands after argument validation and reference checks (a human is never asked to approve a call
that would be refused anyway) and before retries (one approval covers the retries of one call).
It asks when the policy's ``approval`` applies to the call, or when a guard above set
``approval_reasons`` (a loop detected with ``loops.action = "approve"``).

How it asks depends on who is calling (``approval.mode``, docs/approvals.md):

- ``elicit``, client declared elicitation and the approvers admit the client's own human:
  - 2026-07-28: an ``input_required`` result with a form and a signed ``requestState``
    (``gateway.approvals.rounds``); the retry carries the answer;
  - 2025-11-25: an ``elicitation/create`` request on the call's own stream, raced against a
    decision taken out of band meanwhile.
- ``hold``: the call waits for a decision from the REST API, CLI or web UI, with progress
  notifications; a cancelled call withdraws its request.
- ``defer``: ``approval_required`` at once, with the id and where to decide; the identical retry
  after approval runs once.

Whatever the channel, a decision is a record in the state store, taken exactly once, and an approval
is spent by exactly one execution of exactly the call it was asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.approvals.form import approval_form, read_answer
from gateway.approvals.records import ApprovalRecord
from gateway.approvals.requirement import APPROVAL, ApprovalRequirement
from gateway.approvals.rounds import INPUT_KEY, Rounds
from gateway.approvals.service import ApprovalService, DecisionConflict
from gateway.config import ApprovalSettings, PolicyContext
from gateway.config.policy import ANNOTATION_DEFAULTS
from gateway.core import CallNext, Guard, ToolCall, ToolResult, current_backchannel
from gateway.core import errors as e
from gateway.core.clock import Clock
from gateway.guards.outage import store_down_error
from gateway.guards.stage import GuardDeps, Stage
from gateway.guards.traits import TRAITS
from gateway.state.base import StoreUnavailable

log = logging.getLogger("interlock.approvals")

_NOT_READY_RETRY_S = 5.0
"""About how long the gateway takes to try its state store again for the signing secret."""

LOOP_RULE = "loops"
"""The rule name recorded when only loop detection asked (no ``approval`` table applies)."""


@dataclass(frozen=True, slots=True)
class Ask:
    """One decision to ask for: the settings, and why, for the record and the approver."""

    requirement: ApprovalRequirement
    reason: str


class ApprovalGate:
    def __init__(
        self,
        service: ApprovalService,
        clock: Clock,
        settings: ApprovalSettings,
        *,
        decide_url: Callable[[str], str],
        rounds: Rounds,
        load_signer: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.service = service
        self.clock = clock
        self.settings = settings
        self.decide_url = decide_url
        self.rounds = rounds
        self.load_signer = load_signer
        """One more try at reading the signing secret, when a round trip needs it and it is missing."""

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        try:
            return await self._gate(call, call_next)
        except StoreUnavailable as exc:
            # Always closed: a call that needs a human never runs because the records are down.
            raise store_down_error("the approval", exc) from exc

    async def _gate(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        if self.rounds.owns(call):  # the retry of our own input_required round trip
            await self._need_signer()
            return await self.rounds.resume(call, call_next, self._decided)
        ask = self._ask(call)
        if ask is None:
            return await call_next(call)
        # A request for this exact call already went out of band: its decision answers the retry.
        previous = await self.service.deferred_for(call)
        if previous is not None and previous.status != "used":
            return await self._after_deferred(call, call_next, previous)
        if self._elicits(call, ask.requirement):
            if call.caller.protocol_version in MODERN_PROTOCOL_VERSIONS:
                await self._need_signer()  # before the record: a refused round trip leaves none pending
                record = await self._request(call, ask, "elicit")
                return self.rounds.first(call, record, approval_form(record))
            return await self._elicit_legacy(call, call_next, ask)
        mode = ask.requirement.mode if ask.requirement.mode != "elicit" else ask.requirement.fallback
        if mode == "hold":
            return await self._hold(call, call_next, ask)
        return await self._defer(call, call_next, ask)

    # -- whether to ask ---------------------------------------------------------------------

    def _ask(self, call: ToolCall) -> Ask | None:
        req = call.policy.of(APPROVAL)
        reasons = list(call.approval_reasons)
        if req is not None and self._applies(req, call):
            reasons.insert(0, req.reason or _default_reason(req))
        elif not reasons:
            return None
        elif req is None:
            req = ApprovalRequirement(rule=LOOP_RULE)
        return Ask(req, "; ".join(reasons))

    def _applies(self, req: ApprovalRequirement, call: ToolCall) -> bool:
        if req.destructive_only:
            if not call.policy.of(TRAITS).trust_annotations:
                return False
            hints = {**ANNOTATION_DEFAULTS, **call.annotations}
            if hints.get("readOnlyHint") is True or hints.get("destructiveHint") is not True:
                return False
        if req.when is None:
            return True
        try:
            return req.when(PolicyContext.for_call(call).activation()) is True
        except Exception as exc:  # a failing condition must not let a gated call through
            log.warning("approval rule %r: `when` failed (%s); asking for approval anyway", req.rule, exc)
            return True

    @staticmethod
    def _elicits(call: ToolCall, req: ApprovalRequirement) -> bool:
        if req.mode != "elicit" or not req.client_may_decide() or not call.caller.can("elicitation"):
            return False
        caps = call.caller.capabilities.get("elicitation")
        # An elicitation capability that lists modes must include form; an empty one means form.
        return not (isinstance(caps, Mapping) and caps and "form" not in caps)

    async def _need_signer(self) -> None:
        # The signing secret may live in the state store, which may not have answered since the
        # gateway started (it keeps trying in the background). Until then round trips fail closed.
        if self.rounds.signer is None and self.load_signer is not None:
            await self.load_signer()
        if self.rounds.signer is None:
            raise e.StateUnavailable(
                "the approval round trip cannot start yet: the gateway has not read its approval "
                "signing secret from its state store; the call did not run",
                hint=(
                    "The gateway cannot ask for approval right now (its state store has not answered "
                    "since it started). Wait a few seconds and call again; the tool itself is not at fault."
                ),
                retry_after_s=_NOT_READY_RETRY_S,
                details={"reason": "approvals_not_ready"},
            )

    # -- the channels -----------------------------------------------------------------------

    async def _request(self, call: ToolCall, ask: Ask, channel: str) -> ApprovalRecord:
        req = ask.requirement
        return await self.service.request(
            call,
            rule=req.rule,
            reason=ask.reason,
            timeout_s=req.timeout_s,
            approvers=req.approvers,
            channel=channel,
            redact_keys=req.redact,
        )

    async def _elicit_legacy(self, call: ToolCall, call_next: CallNext, ask: Ask) -> ToolResult:
        channel = current_backchannel.get()
        record = await self._request(call, ask, "elicit")
        if channel is None:  # no stream back to the client: the request waits out of band
            return await self._wait(call, call_next, record)
        outcome: list[ApprovalRecord] = []
        failed: list[Exception] = []

        async def ask_client(scope: anyio.CancelScope) -> None:
            try:
                answer = await channel.request("elicitation/create", approval_form(record))
            except Exception as exc:  # the client could not show the form: decide out of band
                failed.append(exc)
                scope.cancel()
                return
            approved, comment = read_answer(answer)
            by = f"client:{call.caller.principal}"
            try:
                outcome.append(await self.service.decide(record.id, approved, by=by, comment=comment))
            except DecisionConflict as conflict:  # decided out of band meanwhile: that decision stands
                outcome.append(conflict.record)
            scope.cancel()

        async def watch(scope: anyio.CancelScope) -> None:
            outcome.append(await self._until_decided(record, progress=False))
            scope.cancel()

        try:
            with anyio.fail_after(max(0.0, record.expires - self.clock.wall()) + 1.0):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask_client, tg.cancel_scope)
                    tg.start_soon(watch, tg.cancel_scope)
        except TimeoutError:
            outcome.append(await self.service.expire(record.id))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.service.withdraw(record.id, by=f"client:{call.caller.principal} (cancelled)")
            raise
        if failed:
            log.warning("approval %s: the client could not be asked (%s); deferring", record.id, failed[0])
            await self.service.remember_deferred(call, record)
            raise self._required(record)
        return await self._decided(call, call_next, outcome[0])

    async def _hold(self, call: ToolCall, call_next: CallNext, ask: Ask) -> ToolResult:
        record = await self._request(call, ask, "hold")
        return await self._wait(call, call_next, record)

    async def _wait(self, call: ToolCall, call_next: CallNext, record: ApprovalRecord) -> ToolResult:
        try:
            decided = await self._until_decided(record, progress=True)
        except BaseException:
            # The client cancelled (or went away): nobody is left to run the call, so withdraw
            # the request rather than leave a human approving something that will never happen.
            with anyio.CancelScope(shield=True):
                await self.service.withdraw(record.id, by=f"client:{call.caller.principal} (cancelled)")
            raise
        return await self._decided(call, call_next, decided)

    async def _until_decided(self, record: ApprovalRecord, *, progress: bool) -> ApprovalRecord:
        channel = current_backchannel.get() if progress else None
        started = self.clock.monotonic()
        next_progress = started
        total = record.expires - record.created
        while True:
            current = await self.service.get(record.id)
            if current.status == "expired":
                return await self.service.expire(record.id)
            if current.status != "pending":
                return current
            if channel is not None and self.clock.monotonic() >= next_progress:
                waited = self.clock.monotonic() - started
                left = max(0, round(record.expires - self.clock.wall()))
                message = f"waiting for approval {record.id} ({left}s left): {self.decide_url(record.id)}"
                await channel.progress(min(waited, total), total, message)
                next_progress += self.settings.progress_every_s
            await self.clock.sleep(self.settings.poll_interval_s)

    async def _defer(self, call: ToolCall, call_next: CallNext, ask: Ask) -> ToolResult:
        record = await self._request(call, ask, "defer")
        await self.service.remember_deferred(call, record)
        raise self._required(record)

    async def _after_deferred(
        self, call: ToolCall, call_next: CallNext, previous: ApprovalRecord
    ) -> ToolResult:
        if previous.status == "pending":  # asked again before a decision: the same request
            raise self._required(previous)
        if previous.status in ("denied", "expired"):
            # Reported once; the pointer goes so that a later retry asks a human anew.
            await self.service.forget_deferred(call, previous.id)
            if previous.status == "expired":
                await self.service.expire(previous.id)
        return await self._decided(call, call_next, previous)

    def _required(self, record: ApprovalRecord) -> e.ApprovalRequired:
        url = self.decide_url(record.id)
        left = max(0, round(record.expires - self.clock.wall()))
        return e.ApprovalRequired(
            f"{record.tool} needs a human's approval (approval {record.id}, rule {record.rule}); "
            f"it has not run. Decide at {url} within {left}s.",
            details={
                "approval_id": record.id,
                "decide_url": url,
                "expires_at": record.expires,
                "expires_in_s": left,
                "rule": record.rule,
                "reason": record.reason,
                "retry": "call the same tool with exactly the same arguments after approval",
            },
        )

    # -- after the decision ---------------------------------------------------------------------

    async def _decided(self, call: ToolCall, call_next: CallNext, record: ApprovalRecord) -> ToolResult:
        """Run the call if ``record`` approves it (spending the approval), else refuse."""
        if record.status == "approved":
            if await self.service.consume(record.id, call):
                # Through rounds.forward: if the upstream asks the client something, the retry
                # that answers it must reach the upstream without asking a human again.
                return await self.rounds.forward(call, call_next)
            # Spent by an identical call that won the race, or expired meanwhile.
            latest = await self.service.get(record.id)
            if latest.status == "approved":  # usable no longer (it lapsed) but not spent
                # The pointer goes too, so that calling again asks a human anew, as the hint says.
                await self.service.forget_deferred(call, latest.id)
                raise _lapsed(latest)
            raise e.ApprovalDenied(
                f"approval {record.id} was already used by an identical call; this one did not run",
                hint="Call the tool again to ask for a new approval, if the user wants it to run again.",
                details={"approval_id": record.id, "status": latest.status},
            )
        if record.status == "expired":
            raise _expired(record)
        if record.status == "used":
            raise e.ApprovalDenied(
                f"approval {record.id} was already used; this call did not run",
                details={"approval_id": record.id, "status": "used"},
            )
        who = record.decided_by or "an approver"
        comment = f": {record.comment}" if record.comment else ""
        raise e.ApprovalDenied(
            f"{record.tool} was denied by {who}{comment}",
            details={
                "approval_id": record.id,
                "decided_by": record.decided_by,
                "comment": record.comment,
                "rule": record.rule,
            },
        )


def _expired(record: ApprovalRecord) -> e.ApprovalExpired:
    return e.ApprovalExpired(
        f"nobody decided on {record.tool} in time (approval {record.id}); it did not run",
        details={"approval_id": record.id, "expired_at": record.expires, "rule": record.rule},
    )


def _lapsed(record: ApprovalRecord) -> e.ApprovalExpired:
    by = record.decided_by or "an approver"
    return e.ApprovalExpired(
        f"{record.tool} was approved by {by}, but the approval expired before the call ran "
        f"(approval {record.id}); it did not run",
        hint=(
            "The call was approved, but it came back after the approval had expired, so it did not "
            "run. Calling the tool again asks for a new approval: ask the user whether to do that, "
            "and call again promptly once it is approved."
        ),
        details={
            "approval_id": record.id,
            "reason": "approved_but_expired",
            "approved_by": record.decided_by,
            "approved_at": record.decided_at,
            "expired_at": record.expires,
            "rule": record.rule,
        },
    )


def _default_reason(req: ApprovalRequirement) -> str:
    if req.destructive_only:
        return f"rule {req.rule}: the tool is annotated destructive"
    if req.when_source:
        return f"rule {req.rule}: {req.when_source}"
    return f"rule {req.rule} requires approval"


def _build(deps: GuardDeps) -> Guard | None:
    return deps.approval


STAGE = Stage("approval", _build, APPROVAL)
"""The gate needs the approval service and its channels, which the app builds; a pipeline built
without them has no gate (the stage is skipped) but still understands ``approval`` settings."""

__all__ = ["INPUT_KEY", "STAGE", "ApprovalGate"]
