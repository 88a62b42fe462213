"""Loop detection in a real chain: refused calls never reach the upstream; warn lets them through."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from gateway.core import Caller, ManualClock, ToolCall, ToolResult, build_chain
from gateway.core.call import SessionSource
from gateway.core.errors import (
    CallBudgetExceeded,
    GatewayError,
    LoopDetected,
    NotFound,
    RateLimited,
    StateUnavailable,
)
from gateway.guards.loops import LoopDetection, LoopSettings
from tests.calls import policy_of

from .test_ratelimit import DictStore

pytestmark = pytest.mark.anyio

Answer = Callable[[ToolCall, int], ToolResult]
"""How the upstream answers: from the call and how many times this tool was called before."""


def pending(call: ToolCall, n: int) -> ToolResult:
    return ToolResult.of_json({"job": call.arguments.get("job"), "status": "pending"})


def progressing(call: ToolCall, n: int) -> ToolResult:
    return ToolResult.of_json({"job": call.arguments.get("job"), "status": "running", "progress": n})


def failing(call: ToolCall, n: int) -> ToolResult:
    return ToolResult.of_text("payment declined", is_error=True)


class Upstream:
    """A recording terminal: answers per exposed tool name, and lists every call it received."""

    def __init__(self, answers: dict[str, Answer] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[ToolCall] = []
        self.raise_for: dict[str, BaseException] = {}

    async def __call__(self, call: ToolCall) -> ToolResult:
        seen = sum(1 for c in self.calls if c.exposed_name == call.exposed_name)
        self.calls.append(call)
        if call.exposed_name in self.raise_for:
            raise self.raise_for[call.exposed_name]
        answer = self.answers.get(call.exposed_name)
        return answer(call, seen) if answer else ToolResult.of_json({"ok": call.exposed_name})

    def names(self) -> list[str]:
        return [c.exposed_name for c in self.calls]


class Rig:
    def __init__(self, answers: dict[str, Answer] | None = None, **settings: Any) -> None:
        self.clock = ManualClock()
        self.store = DictStore(self.clock, rerun_updates=True)
        self.upstream = Upstream(answers)
        self.kinds: list[str] = []
        self.guard = LoopDetection(
            self.store,
            self.clock,
            on_detected=self.kinds.append,
        )
        self.chain = build_chain([self.guard], self.upstream)
        self.settings = LoopSettings(**settings)

    def call(
        self,
        tool: str = "jobs__status",
        session: str = "s1",
        source: SessionSource = "session",
        **arguments: Any,
    ) -> ToolCall:
        server, _, name = tool.partition("__")
        return ToolCall(
            server=server,
            tool=name,
            exposed_name=tool,
            arguments=arguments or {"job": "J1"},
            caller=Caller(principal="alice", session_key=session, session_source=source),
            request_id=f"r{len(self.upstream.calls)}",
            policy=policy_of(loops=self.settings),
        )

    async def ok(self, call: ToolCall, *, step_s: float = 1.0) -> ToolResult:
        result = await self.chain(call)
        self.clock.advance(step_s)
        return result

    async def refused(self, call: ToolCall) -> GatewayError:
        with pytest.raises(GatewayError) as caught:
            await self.chain(call)
        return caught.value


async def test_identical_calls_are_refused_with_evidence_before_the_upstream() -> None:
    rig = Rig(max_identical_calls=3, max_identical_results=100)
    for _ in range(3):
        await rig.ok(rig.call(), step_s=2.0)
    await rig.ok(rig.call(job="J2"))
    err = await rig.refused(rig.call())
    assert isinstance(err, LoopDetected) and err.code == "loop_detected" and not err.retryable
    assert err.hint == LoopDetected.default_hint
    details = err.details
    assert details["kind"] == "identical_calls" and details["count"] == 3 and details["limit"] == 3
    assert details["span_s"] == 4.0 and details["window_s"] == 600.0
    assert details["calls"][0].startswith("jobs__status#")
    assert "jobs__status" in err.message and "3 times" in err.message
    assert len(rig.upstream.calls) == 4, "the refused call never reached the upstream"
    assert rig.kinds == ["identical_calls"]
    # Argument order does not make a call new.
    await rig.ok(rig.call(job="J2"))
    await rig.refused(rig.call(**{"job": "J1"}))


async def test_the_window_forgets_old_calls() -> None:
    rig = Rig(max_identical_calls=2, max_identical_results=100, window_s=60.0)
    await rig.ok(rig.call(), step_s=30.0)
    await rig.ok(rig.call(), step_s=1.0)
    await rig.refused(rig.call())
    rig.clock.advance(29.5)  # the first call is now more than 60 s old
    await rig.ok(rig.call())
    assert len(rig.upstream.calls) == 3


async def test_stuck_polling_is_stopped_with_the_back_off_hint() -> None:
    rig = Rig({"jobs__status": pending}, max_identical_results=3)
    for _ in range(3):
        await rig.ok(rig.call(), step_s=10.0)
    err = await rig.refused(rig.call())
    assert isinstance(err, LoopDetected) and err.details["kind"] == "stuck_polling"
    assert err.details["count"] == 3 and err.details["span_s"] == 20.0
    assert "webhook" in err.hint and "back off" in err.hint.lower() and "ask the user" in err.hint
    assert len(rig.upstream.calls) == 3
    assert rig.kinds == ["stuck_polling"]


async def test_a_polling_tool_whose_result_changes_is_not_a_loop() -> None:
    rig = Rig({"jobs__status": progressing}, max_identical_results=2, polling_min_interval_s=5.0)
    for _ in range(30):
        await rig.ok(rig.call(), step_s=5.0)
    assert len(rig.upstream.calls) == 30 and rig.kinds == []


async def test_an_undeclared_tool_whose_result_changes_is_not_stuck_polling() -> None:
    rig = Rig({"jobs__status": progressing}, max_identical_results=2, max_identical_calls=10)
    for _ in range(10):
        await rig.ok(rig.call())
    assert rig.kinds == []
    err = await rig.refused(rig.call())  # undeclared: the identical-call cap still holds
    assert err.details["kind"] == "identical_calls"


async def test_the_same_failing_call_retried_unchanged_is_refused() -> None:
    rig = Rig({"pay__charge": failing}, max_failing_retries=2)
    first = await rig.ok(rig.call("pay__charge"))
    assert first.is_error
    await rig.ok(rig.call("pay__charge"))
    err = await rig.refused(rig.call("pay__charge"))
    assert err.details["kind"] == "failing_retries" and err.details["count"] == 2
    assert "keeps failing" in err.hint
    await rig.ok(rig.call("pay__charge", job="J2", amount=5))  # changed arguments: a new call
    assert len(rig.upstream.calls) == 3


async def test_refusals_from_below_count_as_failures_and_a_success_resets() -> None:
    rig = Rig(max_failing_retries=2)
    rig.upstream.raise_for["crm__get"] = NotFound("no such customer")
    for _ in range(2):
        with pytest.raises(NotFound):
            await rig.chain(rig.call("crm__get"))
    err = await rig.refused(rig.call("crm__get"))
    assert isinstance(err, LoopDetected) and err.details["kind"] == "failing_retries"

    rig2 = Rig(max_failing_retries=2)
    rig2.upstream.raise_for["crm__get"] = NotFound("no such customer")
    with pytest.raises(NotFound):
        await rig2.chain(rig2.call("crm__get"))
    del rig2.upstream.raise_for["crm__get"]
    await rig2.ok(rig2.call("crm__get"))
    rig2.upstream.raise_for["crm__get"] = NotFound("no such customer")
    with pytest.raises(NotFound):
        await rig2.chain(rig2.call("crm__get"))
    with pytest.raises(NotFound):
        await rig2.chain(rig2.call("crm__get"))  # only one failure in a row before this one


async def test_a_bug_below_is_recorded_as_a_failure() -> None:
    rig = Rig(max_failing_retries=1)
    rig.upstream.raise_for["crm__get"] = RuntimeError("bug")
    with pytest.raises(RuntimeError):
        await rig.chain(rig.call("crm__get"))
    assert (await rig.refused(rig.call("crm__get"))).details["kind"] == "failing_retries"


async def test_an_a_b_cycle_is_refused_when_it_would_start_another_round() -> None:
    rig = Rig(max_cycle_repeats=3)
    for _ in range(3):
        await rig.ok(rig.call("crm__search"))
        await rig.ok(rig.call("crm__get"))
    err = await rig.refused(rig.call("crm__search"))
    assert err.details["kind"] == "cycle" and err.details["count"] == 3
    assert [c.split("#")[0] for c in err.details["calls"]] == ["crm__search", "crm__get"]
    assert err.details["span_s"] == 5.0
    assert len(rig.upstream.calls) == 6
    await rig.ok(rig.call("crm__other"))  # a call that breaks the cycle passes


async def test_a_b_c_cycle_and_its_look_alike() -> None:
    rig = Rig(max_cycle_repeats=2)
    for name in ["a__x", "a__y", "a__z", "a__x", "a__y", "a__z"]:
        await rig.ok(rig.call(name))
    assert (await rig.refused(rig.call("a__x"))).details["kind"] == "cycle"

    varied = Rig(max_cycle_repeats=2)
    for name in ["a__x", "a__y", "a__x", "a__z", "a__x", "a__y", "a__x", "a__z"]:
        await varied.ok(varied.call(name))
    assert varied.kinds == []


async def test_the_session_and_tool_caps_are_call_budgets() -> None:
    rig = Rig(max_calls_per_session=4, max_calls_per_tool_per_session=2, max_identical_calls=100)
    await rig.ok(rig.call("crm__a"))
    await rig.ok(rig.call("crm__a", n=2))
    err = await rig.refused(rig.call("crm__a", n=3))
    assert isinstance(err, CallBudgetExceeded) and err.code == "call_budget_exceeded"
    assert err.details["kind"] == "tool_budget" and err.details["calls"] == ["crm__a"]
    assert err.details["count"] == 2 and not err.retryable and "this tool" in err.hint
    await rig.ok(rig.call("crm__b"))
    await rig.ok(rig.call("crm__c"))
    err = await rig.refused(rig.call("crm__d"))
    assert isinstance(err, CallBudgetExceeded) and err.details["kind"] == "session_budget"
    assert err.details["count"] == 4 and err.details["span_s"] == 3.0
    assert err.hint == CallBudgetExceeded.default_hint
    assert len(rig.upstream.calls) == 4
    assert rig.kinds == ["tool_budget", "session_budget"]


async def test_an_idle_session_expires_with_its_window() -> None:
    rig = Rig(max_calls_per_session=2, window_s=60.0)
    await rig.ok(rig.call("crm__a"))
    await rig.ok(rig.call("crm__b"))
    await rig.refused(rig.call("crm__c"))
    rig.clock.advance(60.0)
    await rig.ok(rig.call("crm__c"))


async def test_two_sessions_do_not_add_up() -> None:
    rig = Rig(max_identical_calls=3, max_calls_per_session=3, max_identical_results=100)
    for _ in range(3):
        await rig.ok(rig.call(session="s1"))
        await rig.ok(rig.call(session="s2"))
    assert len(rig.upstream.calls) == 6 and rig.kinds == []
    assert set(rig.store.docs) == {"loops:s1", "loops:s2"}
    await rig.refused(rig.call(session="s1"))


async def test_a_connection_is_judged_by_the_detectors_but_held_to_no_budget() -> None:
    rig = Rig(max_calls_per_session=2, max_calls_per_tool_per_session=1, max_identical_calls=2)
    conn = "alice@127.0.0.1:53422"
    for job in ("J1", "J2", "J3"):  # past both caps: a connection is no conversation to cap
        await rig.ok(rig.call(session=conn, source="connection", job=job))
    await rig.ok(rig.call(session=conn, source="connection", job="J1"))
    err = await rig.refused(rig.call(session=conn, source="connection", job="J1"))
    assert isinstance(err, LoopDetected) and err.details["kind"] == "identical_calls"
    # The same calls with a session hint are a conversation: its budget holds.
    await rig.ok(rig.call(session="alice/chat-1", source="hint", job="J1"))
    err = await rig.refused(rig.call(session="alice/chat-1", source="hint", job="J2"))
    assert isinstance(err, CallBudgetExceeded) and err.details["kind"] == "tool_budget"


async def test_calls_that_only_name_the_client_are_not_judged_at_all() -> None:
    rig = Rig(max_identical_calls=1, max_calls_per_session=1)
    for _ in range(5):  # any number of agents could be behind "alice": nothing adds up
        await rig.ok(rig.call(session="alice", source="client"))
    assert len(rig.upstream.calls) == 5 and rig.kinds == []
    assert not rig.store.round_trips, "nothing is read or written for them"


async def test_warn_lets_the_call_through_with_the_evidence() -> None:
    rig = Rig({"jobs__status": pending}, action="warn", max_identical_results=2)
    await rig.ok(rig.call())
    await rig.ok(rig.call())
    result = await rig.ok(rig.call())
    assert len(rig.upstream.calls) == 3
    assert "loop_warning" in result.notes
    warning = result.content[-1]["text"]
    assert warning.startswith("Loop warning: ") and "webhook" in warning
    evidence = json.loads(warning.split("Evidence: ", 1)[1])
    assert evidence["kind"] == "stuck_polling" and evidence["count"] == 2
    assert result.content[0] == pending(rig.call(), 0).content[0], "the result itself is untouched"
    assert result.structured == {"job": "J1", "status": "pending"}
    assert rig.kinds == ["stuck_polling"]


async def test_warn_on_a_budget_and_on_a_tool_error() -> None:
    rig = Rig(action="warn", max_calls_per_session=1)
    await rig.ok(rig.call("crm__a"))
    rig.upstream.raise_for["crm__b"] = NotFound("gone")
    with pytest.raises(NotFound) as caught:
        await rig.chain(rig.call("crm__b"))
    assert "session_budget" in caught.value.extra_content[-1]["text"]
    assert rig.upstream.names() == ["crm__a", "crm__b"]


async def test_a_polling_tool_called_too_soon_gets_the_exact_wait_and_is_not_counted() -> None:
    rig = Rig({"jobs__status": pending}, polling_min_interval_s=5.0, max_identical_results=2)
    await rig.ok(rig.call(), step_s=2.0)
    for _ in range(10):
        err = await rig.refused(rig.call())
        assert isinstance(err, RateLimited) and err.retry_after_s == 3.0
    assert err.details == {"reason": "polling_interval", "polling_min_interval_s": 5.0}
    assert "polling tool" in err.message and "5s" in err.message
    rig.clock.advance(2.999)
    assert (await rig.refused(rig.call())).retry_after_s == 0.001
    rig.clock.advance(0.001)
    await rig.ok(rig.call(), step_s=5.0)
    await rig.ok(rig.call(job="J2"))  # other arguments are another poll
    assert len(rig.upstream.calls) == 3
    assert rig.kinds == [], "too-soon calls are rate limited, not counted as a loop"
    # The stuck-polling count saw only the two polls that ran.
    err = await rig.refused(rig.call())
    assert err.details["kind"] == "stuck_polling" and err.details["count"] == 2


async def test_round_trips_two_per_call_one_per_refusal() -> None:
    rig = Rig(max_identical_calls=1)
    await rig.ok(rig.call())
    assert rig.store.round_trips["update"] == 2
    await rig.refused(rig.call())
    assert rig.store.round_trips["update"] == 3
    assert set(rig.store.round_trips) == {"update"}


async def test_disabled_costs_nothing() -> None:
    rig = Rig(enabled=False, max_identical_calls=1)
    for _ in range(3):
        await rig.ok(rig.call())
    assert len(rig.upstream.calls) == 3 and not rig.store.round_trips


async def test_store_down_open_passes_unjudged(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(max_identical_calls=1, on_store_error="open")
    rig.store.down = True
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            await rig.ok(rig.call())
    assert len(rig.upstream.calls) == 3
    assert sum("fail-open" in r.getMessage() for r in caplog.records) == 1


async def test_store_down_closed_refuses_and_a_lost_result_write_is_harmless() -> None:
    rig = Rig(on_store_error="closed")
    rig.store.down = True
    err = await rig.refused(rig.call())
    assert isinstance(err, StateUnavailable) and err.retry_after_s == 1.0
    assert rig.upstream.calls == []

    class DiesMidCall(Upstream):
        async def __call__(self, call: ToolCall) -> ToolResult:
            rig.store.down = True
            return await super().__call__(call)

    rig.store.down = False
    chain = build_chain([rig.guard], DiesMidCall())
    result = await chain(rig.call())
    assert result.structured == {"ok": "jobs__status"}, "the result reaches the agent"


async def test_input_required_results_are_left_as_they_are_in_warn_mode() -> None:
    def ask(call: ToolCall, n: int) -> ToolResult:
        return ToolResult({"resultType": "input_required", "inputRequests": {}, "requestState": "sealed"})

    rig = Rig({"crm__refund": ask}, action="warn", max_identical_calls=1)
    await rig.ok(rig.call("crm__refund"))
    result = await rig.ok(rig.call("crm__refund"))
    assert result.raw == {"resultType": "input_required", "inputRequests": {}, "requestState": "sealed"}
    assert rig.kinds == ["identical_calls"]


async def test_an_old_format_document_reads_as_an_empty_history() -> None:
    rig = Rig(max_identical_calls=1)
    # Version 1 kept one [seq, t, tool, fp, result, failed] list per call; read, this one would be
    # a repeat of the call below. Unreadable now: the session starts afresh, nothing crashes.
    old = {
        "v": 1,
        "n": 5,
        "since": 0.0,
        "tools": {"jobs__status": 5},
        "h": [[5, 0.0, "jobs__status", "f", None, 0]],
    }
    rig.store.docs["loops:s1"] = (json.dumps(old), rig.clock.wall() + 600.0)
    await rig.ok(rig.call())
    doc = json.loads(rig.store.docs["loops:s1"][0])
    assert doc["v"] == 2 and doc["n"] == 1 and len(doc["key"]) == 1 and doc["res"][0] is not None
    await rig.refused(rig.call())


async def test_overlapping_calls_of_a_session_each_record_their_own_result() -> None:
    rig = Rig({"jobs__status": pending}, max_identical_results=2)
    inner: list[ToolResult] = []

    class Overlapping(Upstream):
        async def __call__(self, call: ToolCall) -> ToolResult:
            if call.exposed_name == "crm__slow":  # another call of the session runs meanwhile
                inner.append(await chain(rig.call()))
            return await super().__call__(call)

    chain = build_chain([rig.guard], Overlapping({"jobs__status": pending}))
    await chain(rig.call("crm__slow"))
    rig.clock.advance(1.0)
    await chain(rig.call())
    doc = json.loads(rig.store.docs["loops:s1"][0])
    assert [k.split("#")[0] for k in doc["key"]] == ["crm__slow", "jobs__status", "jobs__status"]
    assert all(r is not None for r in doc["res"]) and doc["res"][1] == doc["res"][2]
    assert doc["res"][0] != doc["res"][1]
    err = await rig.refused(rig.call())  # the two polls that ran got the same result
    assert err.details["kind"] == "stuck_polling" and err.details["count"] == 2
