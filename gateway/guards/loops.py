"""Loop detection: refuse (or flag) the call that would continue a loop, before the upstream sees it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

from gateway.config.models import Seconds
from gateway.config.policy_models import PositiveInt
from gateway.config.units import ExplainView, Key, PolicyTable, Rows, Unit, fields_text, merged
from gateway.core import CallNext, Clock, ToolCall, ToolResult
from gateway.core.errors import CallBudgetExceeded, GatewayError, LoopDetected, RateLimited
from gateway.core.policy import StoreFailure
from gateway.guards.loop_detectors import Evidence, budget_evidence, loop_evidence, polling_wait
from gateway.guards.loop_history import (
    History,
    call_fingerprint,
    call_key,
    error_fingerprint,
    history_size,
    record_result,
    result_fingerprint,
    retry_wait,
)
from gateway.guards.outage import StoreDownLog, ceil_ms, store_down_error
from gateway.guards.stage import GuardDeps, Stage
from gateway.state.base import StateStore, StoreUnavailable

log = logging.getLogger("interlock.guards.loops")


@dataclass(frozen=True, slots=True)
class LoopSettings:
    enabled: bool = True
    action: Literal["warn", "block", "approve"] = "block"
    """``approve``: a detected loop needs a human's approval to go on (the rule's ``approval``
    settings, or the defaults, say how to ask)."""
    window_s: float = 600.0
    max_identical_calls: int = 10
    """The same call (tool + canonical arguments) this many times in the window is a loop."""
    max_identical_results: int = 5
    """The same call getting the same result this many times in a row is stuck polling."""
    max_failing_retries: int = 3
    """The same failing call retried unchanged this many times."""
    max_cycle_repeats: int = 3
    """A cycle (A-B-A-B, A-B-C-A-B-C) repeated this many times."""
    max_calls_per_session: int | None = 500
    max_calls_per_tool_per_session: int | None = 200
    polling_min_interval_s: float | None = None
    """Declares the tool a polling tool: calls sooner than this get rate_limited with the exact wait."""
    on_store_error: StoreFailure = "open"


class LoopsTable(PolicyTable):
    """Loop detection settings; a rule's table overrides only the keys it sets."""

    enabled: bool | None = None
    action: Literal["warn", "block", "approve"] | None = None
    window_s: Seconds | None = None
    max_identical_calls: PositiveInt | None = None
    max_identical_results: PositiveInt | None = None
    max_failing_retries: PositiveInt | None = None
    max_cycle_repeats: PositiveInt | None = None
    max_calls_per_session: PositiveInt | None = None
    max_calls_per_tool_per_session: PositiveInt | None = None
    polling_min_interval_s: Seconds | None = None
    """Declares the tool a polling tool: calls sooner than this get rate_limited with the wait."""
    on_store_error: StoreFailure | None = None


def _rows(loops: LoopSettings, view: ExplainView) -> Rows:
    if not loops.enabled:
        return [("loops", "off")]
    quiet = (
        ("enabled",) if loops.polling_min_interval_s is not None else ("enabled", "polling_min_interval_s")
    )
    return [("loops", fields_text(loops, quiet))]


def _settings(values: Mapping[str, Any]) -> LoopSettings:
    return replace(LoopSettings(), **values["loops"])


LOOPS: Unit[LoopSettings] = Unit(
    name="loops",
    default=LoopSettings(),
    keys={"loops": Key(LoopsTable, "Loop detection per session (merged key by key).", combine=merged)},
    build=_settings,
    rows=_rows,
)

OnDetected = Callable[[str], None]
"""Called with the evidence's kind on every detection, warned or blocked: the metric
``interlock_loops_detected_total{kind}``."""

HINTS: dict[str, str] = {
    "stuck_polling": (
        "This call keeps returning the same result. Back off and wait much longer before checking "
        "again, use a webhook or callback if the tool offers one, or ask the user."
    ),
    "failing_retries": (
        "This exact call keeps failing; repeating it unchanged will fail again. Read the error, change "
        "the arguments or your approach, or ask the user."
    ),
    "tool_budget": (
        "This session has called this tool as often as the policy allows. Do not retry it; finish with "
        "what you have, or ask the user whether to continue."
    ),
}
"""Hints for the kinds whose remedy differs from the error class's default hint."""


@dataclass(slots=True)  # not frozen: a frozen dataclass costs twice as much to build, on every call
class _Admitted:
    t: float
    """When it was admitted: with its fingerprint, what finds its entry again after the call."""
    evidence: Evidence | None
    """Set in warn mode: the call runs, and its result carries the warning."""


@dataclass(frozen=True, slots=True)
class _Refused:
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class _TooSoon:
    wait_s: float
    after: str | None = None
    """The code of the transient failure whose ``retry_after_s`` is not over; None: the polling
    interval is not."""


BUDGETED: frozenset[str] = frozenset({"session", "hint"})
"""The session sources that name one conversation: only those have a call budget to exceed."""


def _before(
    tool: str,
    key: str,
    now: float,
    settings: LoopSettings,
    budgeted: bool,
    current: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, _Admitted | _Refused | _TooSoon]:
    """The pure updater run before the call (``key``: its ``call_key``): judge it, and record it if
    it may run."""
    history = History.from_doc(current).within(now, settings.window_s)
    block = settings.action == "block"
    evidence = budget_evidence(history, tool, settings) if budgeted else None
    if evidence is not None and block:
        return history.to_doc(), _Refused(evidence)
    too_soon = _too_soon_verdict(history, key, now, settings)
    if too_soon is not None:
        return history.to_doc(), too_soon
    evidence = evidence or loop_evidence(history, key, settings)
    if evidence is not None and block:
        return history.to_doc(), _Refused(evidence)
    return history.admit(tool, key, now, history_size(settings)), _Admitted(now, evidence)


def _too_soon_verdict(h: History, key: str, now: float, settings: LoopSettings) -> _TooSoon | None:
    """The longer of the two waits that may hold a repeat back: a polling tool's interval, and the
    ``retry_after_s`` of the transient failure the call last met."""
    polling = polling_wait(h, key, now, settings.polling_min_interval_s)
    retry = retry_wait(h, key, now)
    if retry is not None and (polling is None or retry[0] > polling):
        return _TooSoon(retry[0], retry[1])
    return _TooSoon(polling) if polling is not None else None


@dataclass(slots=True)  # not frozen, like _Admitted: one is built on every call
class _Outcome:
    """What the call's entry is to record once it is over."""

    result: str
    """The result (or error) fingerprint."""
    failed: bool
    transient: bool = False
    wait: tuple[float, str] | None = None
    """(until, code): a transient failure's ``retry_after_s``, as a wall time."""


def _after(
    t: float, key: str, outcome: _Outcome, current: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, None]:
    """The pure updater run after the call: its result fingerprint goes onto its entry."""
    if current is None:
        return None, None  # the session expired meanwhile: nothing to record against
    o = outcome
    return record_result(current, t, key, o.result, o.failed, transient=o.transient, wait=o.wait), None


def refusal(evidence: Evidence) -> GatewayError:
    """The ``block`` action: the error, its message and hint, and the evidence in ``details``."""
    cls = CallBudgetExceeded if evidence.is_budget else LoopDetected
    return cls(
        f"{cls.code.replace('_', ' ')}: {evidence.describe()}",
        hint=HINTS.get(evidence.kind),
        details=evidence.details(),
    )


def warning_block(evidence: Evidence) -> dict[str, str]:
    """The ``warn`` action: a text block next to the result, like a reminder."""
    hint = HINTS.get(evidence.kind) or (
        CallBudgetExceeded.default_hint if evidence.is_budget else LoopDetected.default_hint
    )
    body = json.dumps(evidence.details(), separators=(",", ":"))
    return {"type": "text", "text": f"Loop warning: {evidence.describe()}. {hint} Evidence: {body}"}


class LoopDetection:
    """Refuses the call that would continue a loop in its session, or flags it (policy ``loops``).

    Refuses (action ``block``) with ``loop_detected`` when the session's history shows: the same call
    (tool + canonical arguments) already ``max_identical_calls`` times in ``window_s``; the same call
    getting the same result ``max_identical_results`` times in a row (stuck polling); the same call
    failing ``max_failing_retries`` times in a row (``isError`` or a refusal; not a transient,
    ``retryable`` failure); or a cycle of 2 to 4 distinct calls repeated ``max_cycle_repeats`` times.
    Refuses with ``call_budget_exceeded`` when the session made ``max_calls_per_session`` calls, or
    ``max_calls_per_tool_per_session`` to this tool. ``details`` carries the evidence: {kind, calls,
    count, limit, span_s, window_s}. With action ``warn`` the call runs and a "Loop warning: ..."
    text block with the same evidence is added to its result (or to a tool-plane error), noted
    ``loop_warning``. Refuses with ``rate_limited`` and the exact wait, without recording the call
    (so it is never counted as a loop): a polling tool (``polling_min_interval_s``) called again with
    the same arguments too soon (``details.reason = "polling_interval"``), and a call repeated before
    the ``retry_after_s`` of its last, transient failure is over (``"retry_after"``).

    Keys on: the session (``caller.session_key``): one JSON document ``loops:{session}`` in the state
    store, expiring ``window_s`` after the session's last call, with the last 24 calls (time, tool,
    call fingerprint, result fingerprint, failed) and the session's call counters. How far the key
    can be trusted (``caller.session_source``) decides what is judged: a session or a hint is one
    conversation, judged in full; a connection is one client program but no conversation, so the
    budgets do not apply to it; a key that names only the client (any number of agents) is not
    judged at all, and costs nothing. Costs two
    ``update`` round trips per call: one before (judge and record) and one after (the result). The
    result is not folded into the next call's round trip because that call may land on another
    replica, and concurrent calls of a session would lose results. Refused calls cost one round trip
    and are not recorded. When the store is unavailable, ``loops.on_store_error`` decides: ``open``
    lets the call through unjudged (logged once a minute), ``closed`` refuses with
    ``state_unavailable``.

    Position: after access (a forbidden call is not a loop to count), before rate limits (a loop is
    refused as a loop rather than slowly throttled) and before argument validation (repeated invalid
    calls are loops too: their ``invalid_arguments`` refusals count as failures).
    """

    def __init__(
        self,
        store: StateStore,
        clock: Clock,
        *,
        on_detected: OnDetected | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_detected = on_detected
        self._store_down = StoreDownLog(clock)

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        settings = call.policy.of(LOOPS)
        source = call.caller.session_source
        if not settings.enabled or source == "client":  # "client": maybe many agents, none to judge
            return await call_next(call)
        doc_key = f"loops:{call.caller.session_key}"
        tool = call.exposed_name
        key = call_key(tool, call_fingerprint(tool, call.arguments, call.extra))
        # Wall time: replicas sharing one store must agree on one timeline.
        now = self.clock.wall()
        judge = partial(_before, tool, key, now, settings, source in BUDGETED)  # positional: cheaper
        try:
            verdict = await self.store.update(doc_key, judge, ttl_s=settings.window_s)
        except StoreUnavailable as exc:
            if settings.on_store_error == "open":
                self._store_down.warn("loop detection", exc)
                return await call_next(call)
            raise store_down_error("loop detection", exc) from exc
        if isinstance(verdict, _TooSoon):
            raise self._too_soon(call, settings, verdict)
        if isinstance(verdict, _Refused):
            self._detected(verdict.evidence)
            raise refusal(verdict.evidence)
        assert isinstance(verdict, _Admitted)
        if verdict.evidence is not None:
            self._detected(verdict.evidence)
            if settings.action == "approve":  # a human decides whether the session may go on
                reason = f"loop detected: {verdict.evidence.describe()}"
                call = call.with_changes(approval_reasons=(*call.approval_reasons, reason))
        return await self._run(call, call_next, doc_key, key, verdict, settings)

    async def _run(
        self,
        call: ToolCall,
        call_next: CallNext,
        doc_key: str,
        key: str,
        verdict: _Admitted,
        settings: LoopSettings,
    ) -> ToolResult:
        warn = verdict.evidence is not None and settings.action == "warn"
        warning = warning_block(verdict.evidence) if warn and verdict.evidence is not None else None
        try:
            result = await call_next(call)
        except GatewayError as err:
            await self._record(doc_key, verdict.t, key, self._failure(err, settings), settings)
            if warning is not None and err.plane == "tool":
                err.extra_content.append(warning)
            raise
        except Exception:
            # A bug below is still a failed call; cancellation (BaseException) is no outcome at all.
            failure = _Outcome(error_fingerprint("internal_error", ""), True)
            await self._record(doc_key, verdict.t, key, failure, settings)
            raise
        outcome = _Outcome(result_fingerprint(result.raw), result.is_error)
        await self._record(doc_key, verdict.t, key, outcome, settings)
        if warning is None or result.input_required:
            return result
        raw = dict(result.raw)
        raw["content"] = [*result.content, warning]
        return ToolResult(raw, result.notes).noted("loop_warning")

    def _failure(self, err: GatewayError, settings: LoopSettings) -> _Outcome:
        """A refusal or failure from below, as the history keeps it.

        What the gateway calls ``retryable`` is transient: the upstream was down, slow or busy, a
        circuit was open, a rate limit or the state store said wait, or a human has yet to approve.
        Repeating it unchanged is the advice, so it is no failing retry; its ``retry_after_s``
        (capped at the window the history lives for) is kept, to hold back a repeat that comes
        sooner. Anything else (``isError`` results the classifier did not call transient
        included) is a failure."""
        fingerprint = error_fingerprint(err.code, err.message)
        if not err.retryable:
            return _Outcome(fingerprint, True)
        wait = None
        if err.retry_after_s is not None and err.retry_after_s > 0:
            until = self.clock.wall() + min(err.retry_after_s, settings.window_s)
            wait = (until, err.code)
        return _Outcome(fingerprint, True, transient=True, wait=wait)

    async def _record(
        self, doc_key: str, t: float, key: str, outcome: _Outcome, settings: LoopSettings
    ) -> None:
        finish = partial(_after, t, key, outcome)
        try:
            await self.store.update(doc_key, finish, ttl_s=settings.window_s)
        except StoreUnavailable as exc:
            # The call has run; its result must reach the agent. Only the loop evidence is lost.
            self._store_down.warn("loop detection (result not recorded)", exc)

    def _too_soon(self, call: ToolCall, settings: LoopSettings, verdict: _TooSoon) -> RateLimited:
        wait_s = verdict.wait_s
        if verdict.after is not None:
            return RateLimited(
                f"{call.exposed_name} with these arguments last failed with {verdict.after}, which "
                "asked to wait before calling it again",
                hint=(
                    "Wait retry_after_s seconds, then make the same call again; calling sooner "
                    "cannot succeed. Meanwhile you may do other work."
                ),
                retry_after_s=ceil_ms(wait_s),
                details={"reason": "retry_after", "error": verdict.after},
            )
        interval = settings.polling_min_interval_s
        return RateLimited(
            f"{call.exposed_name} is a polling tool: call it with the same arguments at most once "
            f"every {interval:g}s",
            hint=(
                "Wait retry_after_s seconds before checking again; calling sooner cannot change the "
                "answer. Use a webhook or callback if the tool offers one."
            ),
            retry_after_s=ceil_ms(wait_s),
            details={"reason": "polling_interval", "polling_min_interval_s": interval},
        )

    def _detected(self, evidence: Evidence) -> None:
        if self.on_detected is not None:
            self.on_detected(evidence.kind)


def _build(deps: GuardDeps) -> LoopDetection:
    return LoopDetection(deps.store, deps.clock, on_detected=deps.events.loop_detected)


STAGE = Stage("loops", _build, LOOPS)
