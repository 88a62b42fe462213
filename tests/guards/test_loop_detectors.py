"""The loop detectors as pure functions: each fires at its threshold and not on its look-alikes."""

from __future__ import annotations

from dataclasses import replace

from gateway.core.policy import LoopSettings
from gateway.guards.loop_detectors import (
    Entry,
    History,
    budget_evidence,
    call_fingerprint,
    cycle,
    error_fingerprint,
    failing_retries,
    history_size,
    identical_calls,
    loop_evidence,
    polling_wait,
    result_fingerprint,
    stuck_polling,
)

W = 600.0


def fp(name: str) -> str:
    return call_fingerprint(name, {"q": name})


def entries(
    *spec: str | tuple[str, str | None] | tuple[str, str | None, bool], step: float = 1.0
) -> list[Entry]:
    """``"A"`` a pending call; ``("A", "r1")`` a call that returned r1; ``("A", "e", True)`` a failure."""
    out = []
    for i, item in enumerate(spec):
        name, result, failed = (item, None, False) if isinstance(item, str) else (*item, False)[:3]
        out.append(Entry(i + 1, 100.0 + i * step, name, fp(name), result, bool(failed)))
    return out


def test_call_fingerprints_ignore_key_order_and_spacing_but_not_values() -> None:
    a = call_fingerprint("crm__get", {"id": "C1", "opts": {"x": 1, "y": [1, 2]}})
    b = call_fingerprint("crm__get", {"opts": {"y": [1, 2], "x": 1}, "id": "C1"})
    assert a == b and len(a) == 16
    assert a != call_fingerprint("crm__get", {"id": "C2", "opts": {"x": 1, "y": [1, 2]}})
    assert a != call_fingerprint("crm__list", {"id": "C1", "opts": {"x": 1, "y": [1, 2]}})
    continued = call_fingerprint(
        "crm__get", {"id": "C1", "opts": {"x": 1, "y": [1, 2]}}, {"requestState": "s"}
    )
    assert continued != a, "a multi-round-trip continuation is not a repeat of the first call"
    assert call_fingerprint("t", {}, {}) == call_fingerprint("t", {})


def test_result_fingerprints_cover_content_structured_content_and_is_error() -> None:
    text = {"content": [{"type": "text", "text": "pending"}]}
    assert result_fingerprint(text) == result_fingerprint({**text, "_meta": {"at": 1}})
    assert result_fingerprint(text) != result_fingerprint({**text, "isError": True})
    assert result_fingerprint(text) != result_fingerprint({**text, "structuredContent": {"s": 1}})
    assert error_fingerprint("not_found", "x") != error_fingerprint("not_found", "y")


def test_identical_calls_fire_once_the_threshold_is_already_reached() -> None:
    history = entries("A", "B", "A", "A")
    assert identical_calls(history, fp("A"), limit=4, window_s=W) is None
    ev = identical_calls(history, fp("A"), limit=3, window_s=W)
    assert ev is not None
    assert ev.details() == {
        "kind": "identical_calls",
        "calls": [f"A#{fp('A')[:8]}"],
        "count": 3,
        "limit": 3,
        "span_s": 3.0,
        "window_s": W,
    }
    assert identical_calls(history, fp("B"), limit=3, window_s=W) is None
    assert "already called 3 times" in ev.describe()


def test_stuck_polling_needs_the_same_result_in_a_row() -> None:
    same = entries(("A", "pending"), ("A", "pending"), ("A", "pending"))
    ev = stuck_polling(same, fp("A"), limit=3, window_s=W)
    assert ev is not None and ev.kind == "stuck_polling" and ev.count == 3 and ev.span_s == 2.0


def test_a_polling_result_that_changes_is_not_stuck() -> None:
    progress = entries(*[("A", f"{pct}%") for pct in range(0, 100, 10)])
    assert stuck_polling(progress, fp("A"), limit=2, window_s=W) is None
    changed_last = entries(("A", "p"), ("A", "p"), ("A", "p"), ("A", "done"))
    assert stuck_polling(changed_last, fp("A"), limit=2, window_s=W) is None


def test_stuck_polling_skips_calls_in_flight_and_other_calls_between() -> None:
    history = entries(("A", "p"), ("B", "x"), ("A", "p"), "A", ("C", "y"), ("A", "p"))
    ev = stuck_polling(history, fp("A"), limit=3, window_s=W)
    assert ev is not None and ev.count == 3


def test_failing_retries_count_failures_in_a_row_and_a_success_resets_them() -> None:
    failing = entries(("A", "e", True), ("A", "e2", True))
    ev = failing_retries(failing, fp("A"), limit=2, window_s=W)
    assert ev is not None and ev.kind == "failing_retries" and ev.count == 2
    assert failing_retries(failing, fp("A"), limit=3, window_s=W) is None
    recovered = entries(("A", "e", True), ("A", "ok"), ("A", "e", True))
    assert failing_retries(recovered, fp("A"), limit=2, window_s=W) is None
    assert stuck_polling(failing, fp("A"), limit=1, window_s=W) is None, "failures are not polling"


def test_cycles_of_two_three_and_four_distinct_calls() -> None:
    abab = entries("A", "B", "A", "B", "A", "B")
    ev = cycle(abab, fp("A"), repeats=3, window_s=W)
    assert ev is not None and ev.kind == "cycle" and ev.count == 3 and ev.span_s == 5.0
    assert ev.calls == (f"A#{fp('A')[:8]}", f"B#{fp('B')[:8]}")
    assert "A#" in ev.describe() and " -> " in ev.describe()
    assert cycle(abab, fp("B"), repeats=3, window_s=W) is None, "B does not continue the cycle"
    assert cycle(abab, fp("C"), repeats=3, window_s=W) is None
    assert cycle(abab, fp("A"), repeats=4, window_s=W) is None
    assert cycle(entries(*"ABCABC"), fp("A"), repeats=2, window_s=W) is not None
    four = cycle(entries(*"XABCDABCD"), fp("A"), repeats=2, window_s=W)
    assert four is not None and len(four.calls) == 4


def test_cycle_counts_every_complete_round() -> None:
    ev = cycle(entries(*"ABABABAB"), fp("A"), repeats=2, window_s=W)
    assert ev is not None and ev.count == 4 and ev.span_s == 7.0


def test_look_alikes_are_not_cycles() -> None:
    assert cycle(entries(*"AAAAAA"), fp("A"), repeats=3, window_s=W) is None, "identical, not a cycle"
    assert cycle(entries(*"ABACAB"), fp("A"), repeats=2, window_s=W) is None
    assert cycle(entries(*"ABAB"), fp("A"), repeats=3, window_s=W) is None, "too few rounds"
    assert cycle(entries(*"ABBA" * 2), fp("A"), repeats=2, window_s=W) is None


def _history(calls: int, tools: dict[str, int]) -> History:
    return History(tuple(entries("A", "B")), calls, tools, since=50.0)


def test_budgets_per_session_and_per_tool() -> None:
    settings = LoopSettings(max_calls_per_session=5, max_calls_per_tool_per_session=3)
    assert budget_evidence(_history(4, {"A": 2, "B": 2}), "A", settings) is None
    ev = budget_evidence(_history(5, {"A": 2, "B": 3}), "A", settings)
    assert ev is not None and ev.kind == "session_budget" and ev.count == 5 and ev.is_budget
    assert ev.calls == ("B", "A") and ev.span_s == 51.0
    ev = budget_evidence(_history(4, {"A": 3, "B": 1}), "A", settings)
    assert ev is not None and ev.kind == "tool_budget" and ev.calls == ("A",) and ev.count == 3
    assert budget_evidence(_history(4, {"A": 3, "B": 1}), "B", settings) is None
    off = LoopSettings(max_calls_per_session=None, max_calls_per_tool_per_session=None)
    assert budget_evidence(_history(10_000, {"A": 10_000}), "A", off) is None


def test_loop_evidence_order_and_polling_tools() -> None:
    settings = LoopSettings(max_identical_calls=3, max_identical_results=3, max_failing_retries=2)
    failing = entries(("A", "e", True), ("A", "e", True), ("A", "e", True))
    ev = loop_evidence(failing, fp("A"), settings)
    assert ev is not None and ev.kind == "failing_retries", "the most specific explanation wins"
    progress = entries(("A", "1"), ("A", "2"), ("A", "3"), ("A", "4"))
    ev = loop_evidence(progress, fp("A"), settings)
    assert ev is not None and ev.kind == "identical_calls"
    polling = replace(settings, polling_min_interval_s=1.0)
    assert loop_evidence(progress, fp("A"), polling) is None, "a declared polling tool may repeat"


def test_polling_wait_is_the_exact_remainder() -> None:
    history = entries(("A", "p"), ("B", "x"))  # A at t=100, B at t=101
    assert polling_wait(history, fp("A"), 102.5, 5.0) == 2.5
    assert polling_wait(history, fp("A"), 105.0, 5.0) is None
    assert polling_wait(history, fp("C"), 100.0, 5.0) is None
    assert polling_wait(history, fp("A"), 100.0, None) is None


def test_history_round_trips_prunes_bounds_and_survives_garbage() -> None:
    history = History()
    for i in range(60):
        history, entry = history.admit("A", fp("A"), 100.0 + i, 50)
    assert len(history.entries) == 50 and history.calls == 60 and history.tools == {"A": 60}
    assert history.since == 100.0 and entry.seq == 60
    history = history.finish(60, fp("A"), "r", True)
    assert history.entries[-1].result == "r" and history.entries[-1].failed
    assert History.from_doc(history.to_doc()) == history
    assert len(history.within(now=160.0, window_s=10.0).entries) == 10
    for junk in (None, {}, {"v": 2}, {"v": 1, "h": [["x"]]}, {"v": 1, "h": [[1, "t", "A", "f", None, 0]]}):
        assert History.from_doc(junk) == History()


def test_history_size_makes_every_threshold_reachable() -> None:
    assert history_size(LoopSettings()) == 24
    assert history_size(LoopSettings(max_identical_calls=120)) == 121
    assert history_size(LoopSettings(max_identical_calls=10_000)) == 500
