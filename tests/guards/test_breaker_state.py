"""The breaker's state machine alone: pure functions over a JSON document, time and jitter passed in."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gateway.guards.breaker_state import (
    Admission,
    BreakerSettings,
    Doc,
    Outcome,
    Report,
    Ticket,
    after,
    before,
    rates,
    release,
)

S = BreakerSettings(
    window_size=4,
    minimum_calls=4,
    failure_rate=0.5,
    slow_call_rate=0.75,
    slow_call_s=1.0,
    half_open_calls=2,
    break_s=10.0,
    max_break_s=30.0,
    break_multiplier=2.0,
)
T0 = 1_700_000_000.0
OK, FAIL, IGNORED = Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORED


class Breaker:
    """Drives the machine the way a store does: the document only changes through (doc, result)."""

    def __init__(self, settings: BreakerSettings = S) -> None:
        self.settings = settings
        self.doc: Doc | None = None
        self.now = T0
        self.ids = 0

    def before(self, lease_s: float = 5.0) -> Admission:
        self.ids += 1
        frozen = copy.deepcopy(self.doc)
        doc, admission = before(
            self.doc, self.settings, now=self.now, permit_id=f"p{self.ids}", lease_s=lease_s
        )
        assert self.doc == frozen, "the input document must not be mutated"
        self.doc = json.loads(json.dumps(doc))  # JSON-able: the same on every store
        return admission

    def after(self, ticket: Ticket, outcome: Outcome, *, slow: bool = False, jitter: float = 1.0) -> Report:
        frozen = copy.deepcopy(self.doc)
        doc, report = after(self.doc, self.settings, ticket, outcome, slow=slow, now=self.now, jitter=jitter)
        assert self.doc == frozen
        self.doc = json.loads(json.dumps(doc))
        return report

    def call(self, outcome: Outcome, *, slow: bool = False, jitter: float = 1.0) -> Report:
        admission = self.before()
        assert admission.allowed and admission.ticket is not None
        return self.after(admission.ticket, outcome, slow=slow, jitter=jitter)

    def trip(self, jitter: float = 1.0) -> None:
        for outcome in (OK, OK, FAIL):
            assert self.call(outcome).state == "closed"
        assert self.call(FAIL, jitter=jitter).entered == ("open",)

    @property
    def state(self) -> Any:
        assert self.doc is not None
        return self.doc["state"]


def test_a_missing_or_unreadable_document_is_a_fresh_closed_breaker() -> None:
    for doc in (None, {}, {"state": "open"}, {"state": "half_open", "permits": "x"}, {"gen": "7"}):
        result, admission = before(doc, S, now=T0, permit_id="p", lease_s=1.0)
        assert admission.allowed and admission.state == "closed" and admission.ticket == Ticket(0)
        assert result["state"] == "closed"


def test_it_opens_when_the_failure_rate_reaches_the_threshold() -> None:
    b = Breaker()
    assert [b.call(o).state for o in (OK, FAIL, OK)] == ["closed"] * 3
    report = b.call(FAIL, jitter=1.05)
    assert report == Report("open", ("open",), counted=True)
    assert b.doc == {"state": "open", "gen": 1, "until": T0 + 10.0 * 1.05, "break_s": 10.0}


def test_no_decision_before_minimum_calls() -> None:
    b = Breaker()
    assert [b.call(FAIL).state for _ in range(3)] == ["closed"] * 3  # 100 % failures, but 3 < 4
    assert b.call(FAIL).state == "open"


def test_minimum_calls_above_the_window_lets_the_full_window_decide() -> None:
    b = Breaker(BreakerSettings(window_size=3, minimum_calls=10, failure_rate=0.5))
    assert [b.call(FAIL).state for _ in range(3)] == ["closed", "closed", "open"]


def test_the_window_keeps_only_the_last_window_size_outcomes() -> None:
    b = Breaker(BreakerSettings(window_size=4, minimum_calls=4, failure_rate=0.75))
    for outcome in (FAIL, FAIL, OK, OK, OK, FAIL):
        assert b.call(outcome).state == "closed"
    assert b.doc is not None and b.doc["window"] == "sssf"
    assert rates("sSfF") == (0.5, 0.5)


def test_it_opens_on_the_slow_call_rate_even_when_every_call_succeeds() -> None:
    b = Breaker()
    b.call(OK, slow=False)
    b.call(OK, slow=True)
    assert b.call(OK, slow=True).state == "closed"  # below minimum_calls
    assert b.call(OK, slow=False).state == "closed"  # 2 slow of 4 = 0.5 < 0.75
    assert b.call(OK, slow=True).state == "open"  # the last four: S S s S = 0.75
    assert b.doc is not None and b.doc["break_s"] == 10.0


def test_slow_counts_whatever_the_outcome() -> None:
    b = Breaker(BreakerSettings(window_size=2, minimum_calls=2, failure_rate=1.0, slow_call_rate=1.0))
    b.call(FAIL, slow=True)
    assert b.call(OK, slow=True).state == "open"  # failure rate 0.5, slow rate 1.0


def test_ignored_outcomes_neither_count_nor_reset_the_window() -> None:
    b = Breaker()
    b.call(FAIL)
    for _ in range(10):
        assert b.call(IGNORED) == Report("closed")
    assert b.doc is not None and b.doc["window"] == "f"


def test_open_refuses_with_the_exact_remaining_break() -> None:
    b = Breaker()
    b.trip(jitter=0.95)
    b.now += 3.0
    admission = b.before()
    assert not admission.allowed and admission.state == "open" and admission.ticket is None
    assert admission.retry_after_s == pytest.approx(10.0 * 0.95 - 3.0)


def test_after_the_break_exactly_n_trial_permits_are_handed_out() -> None:
    b = Breaker()
    b.trip()
    b.now += 10.0
    first = b.before(lease_s=5.0)
    assert first.allowed and first.entered == ("half_open",) and first.ticket is not None
    second = b.before(lease_s=5.0)
    assert second.allowed and second.entered == () and second.ticket is not None
    for _ in range(5):
        refused = b.before()
        assert not refused.allowed and refused.state == "half_open"
        assert refused.retry_after_s == pytest.approx(1.0)  # capped at slow_call_s; the lease is 5 s
    assert b.doc is not None and set(b.doc["permits"]) == {first.ticket.permit, second.ticket.permit}


def test_all_trials_succeeding_closes_and_resets_the_window() -> None:
    b = Breaker()
    b.trip()
    b.now += 10.0
    tickets = [b.before().ticket for _ in range(2)]
    assert b.after(tickets[0], OK).state == "half_open"
    assert b.after(tickets[1], OK) == Report("closed", ("closed",), counted=True)
    assert b.doc == {"state": "closed", "gen": 3, "window": ""}


def test_a_failed_trial_reopens_with_a_longer_capped_jittered_break() -> None:
    b = Breaker()
    b.trip()
    expected_bases = [20.0, 30.0, 30.0]  # 10 * 2, then capped at max_break_s
    for base, jitter in zip(expected_bases, (1.1, 0.9, 1.1), strict=True):
        b.now = b.doc["until"] if b.doc else b.now
        ticket = b.before().ticket
        assert ticket is not None
        assert b.after(ticket, FAIL, jitter=jitter) == Report("open", ("open",), counted=True)
        assert b.doc is not None and b.doc["break_s"] == base
        assert b.doc["until"] - b.now == pytest.approx(min(30.0, base * jitter))


def test_jitter_is_clamped_to_ten_percent() -> None:
    b = Breaker()
    b.trip(jitter=5.0)
    assert b.doc is not None and b.doc["until"] - b.now == pytest.approx(11.0)


def test_slow_trials_reopen_when_they_reach_the_slow_call_rate() -> None:
    b = Breaker()
    b.trip()
    b.now += 10.0
    tickets = [b.before().ticket for _ in range(2)]
    b.after(tickets[0], OK, slow=True)
    assert b.after(tickets[1], OK, slow=True).state == "open"


def test_an_ignored_trial_gives_its_permit_back() -> None:
    b = Breaker()
    b.trip()
    b.now += 10.0
    tickets = [b.before().ticket for _ in range(2)]
    assert not b.before().allowed
    assert b.after(tickets[0], IGNORED) == Report("half_open", counted=True)
    assert b.before().allowed


def test_a_lapsed_permit_is_reissued_and_its_late_report_is_dropped() -> None:
    b = Breaker(BreakerSettings(half_open_calls=1, window_size=1, minimum_calls=1))
    b.call(FAIL)
    b.now += 20.0
    vanished = b.before(lease_s=4.0).ticket
    b.now += 3.9
    assert not b.before().allowed
    b.now += 0.2  # the lease has passed: the holder is presumed dead
    fresh = b.before(lease_s=4.0)
    assert fresh.allowed and fresh.ticket is not None and vanished is not None
    assert b.after(vanished, FAIL) == Report("half_open")  # nothing changes
    assert b.after(fresh.ticket, OK).state == "closed"


def test_release_returns_a_permit_once_and_ignores_stale_tickets() -> None:
    b = Breaker()
    b.trip()
    b.now += 10.0
    tickets = [b.before().ticket for _ in range(2)]
    assert tickets[0] is not None
    assert release(b.doc, Ticket(tickets[0].gen))[1] == Report("half_open")  # not a trial
    assert b.doc is not None
    b.doc, report = release(b.doc, tickets[0])
    assert tickets[1] is not None
    assert report.counted and list(b.doc["permits"]) == [tickets[1].permit]
    assert release(b.doc, tickets[0])[1] == Report("half_open")


def test_an_outcome_from_before_a_transition_is_dropped() -> None:
    b = Breaker()
    started_closed = b.before().ticket
    assert started_closed is not None
    b.trip()
    b.now += 10.0
    for _ in range(2):
        ticket = b.before().ticket
        assert ticket is not None
        b.after(ticket, OK)
    assert b.state == "closed"
    assert b.after(started_closed, FAIL) == Report("closed")
    assert b.doc is not None and b.doc["window"] == ""


def test_lowering_half_open_calls_mid_trial_does_not_wedge_it() -> None:
    b = Breaker()
    b.trip()
    b.now += 10.0
    ticket = b.before().ticket
    assert ticket is not None
    b.after(ticket, OK)  # one of two trials passed
    b.settings = BreakerSettings(**{**_fields(S), "half_open_calls": 1})
    admission = b.before()
    assert admission.allowed and admission.state == "closed" and admission.entered == ("closed",)


def _fields(settings: BreakerSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}
