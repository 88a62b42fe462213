"""The loop detectors as pure functions: each fires at its threshold and not on its look-alikes."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest

from gateway.guards.loop_detectors import (
    budget_evidence,
    cycle,
    failing_retries,
    identical_calls,
    loop_evidence,
    polling_wait,
    stuck_polling,
)
from gateway.guards.loop_history import (
    DOC_VERSION,
    FAILED,
    TRANSIENT,
    History,
    _canonical,
    call_fingerprint,
    call_key,
    error_fingerprint,
    history_size,
    record_result,
    result_fingerprint,
    retry_wait,
)
from gateway.guards.loops import LoopSettings
from gateway.state.memory import decode_doc, encode_doc

W = 600.0


def fp(name: str) -> str:
    """The history's key of the call ``name`` (the tool name and its call fingerprint)."""
    return call_key(name, call_fingerprint(name, {"q": name}))


def label(name: str) -> str:
    return f"{name}#{call_fingerprint(name, {'q': name})[:8]}"


def entries(*spec: str | tuple[str, str | None] | tuple[str, str | None, bool], step: float = 1.0) -> History:
    """``"A"`` a pending call; ``("A", "r1")`` a call that returned r1; ``("A", "e", True)`` a failure."""
    history = History()
    for i, item in enumerate(spec):
        name, result, failed = (item, None, False) if isinstance(item, str) else (*item, False)[:3]
        doc = history.admit(name, fp(name), 100.0 + i * step, 500)
        if result is not None:
            doc = record_result(doc, 100.0 + i * step, fp(name), result, bool(failed))
        history = History.from_doc(doc)
    return history


def test_call_fingerprints_ignore_key_order_and_spacing_but_not_values() -> None:
    a = call_fingerprint("crm__get", {"id": "C1", "opts": {"x": 1, "y": [1, 2]}})
    b = call_fingerprint("crm__get", {"opts": {"y": [1, 2], "x": 1}, "id": "C1"})
    assert a == b and len(a) == 16 and int(a, 16) >= 0
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
        "calls": [label("A")],
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


def _transient(history: History, t: float, until: float | None = None) -> History:
    """``history`` with A admitted at ``t`` and failed transiently (retry not before ``until``)."""
    doc = history.admit("A", fp("A"), t, 500)
    wait = (until, "upstream_rate_limited") if until is not None else None
    return History.from_doc(record_result(doc, t, fp("A"), "e", True, transient=True, wait=wait))


def test_transient_failures_are_skipped_by_the_detectors_that_judge_outcomes() -> None:
    history = entries(("A", "e", True))
    history = _transient(history, 101.0)
    assert history.res[-1] == TRANSIENT + "e" and not history.failed(1)
    history = History.from_doc(
        record_result(history.admit("A", fp("A"), 102.0, 500), 102.0, fp("A"), "e", True)
    )
    ev = failing_retries(history, fp("A"), limit=2, window_s=W)
    assert ev is not None and ev.count == 2 and ev.span_s == 2.0, "skipped: it neither counts nor breaks"
    outage = History()
    for i in range(5):
        outage = _transient(outage, 100.0 + i)
    assert failing_retries(outage, fp("A"), limit=1, window_s=W) is None
    assert stuck_polling(outage, fp("A"), limit=1, window_s=W) is None
    ev = identical_calls(outage, fp("A"), limit=5, window_s=W)
    assert ev is not None and ev.count == 5, "the calls still count as calls"
    polls = entries(("A", "p"), ("A", "p"))
    ev = stuck_polling(_transient(polls, 102.0), fp("A"), limit=2, window_s=W)
    assert ev is not None and ev.count == 2


def test_retry_wait_is_the_exact_remainder_of_the_advised_wait() -> None:
    history = _transient(entries(("B", "x")), 101.0, until=104.0)
    assert retry_wait(history, fp("A"), 102.5) == (1.5, "upstream_rate_limited")
    assert retry_wait(history, fp("A"), 104.0) is None
    assert retry_wait(history, fp("B"), 102.5) is None
    stored = History.from_doc(decode_doc(encode_doc(history.to_doc())))
    assert retry_wait(stored, fp("A"), 102.5) == (1.5, "upstream_rate_limited")
    # A later call drops the waits that are over, and those of calls no longer in the history.
    assert History.from_doc(history.admit("B", fp("B"), 103.0, 500)).wait == history.wait
    assert History.from_doc(history.admit("B", fp("B"), 104.0, 500)).wait == {}
    assert History.from_doc(history.admit("B", fp("B"), 103.0, 1)).wait == {}
    for junk in ("soon", ["A"], {fp("A"): "soon"}, {fp("A"): [None, 1]}, {fp("A"): [1.0]}):
        bad = History.from_doc({**history.to_doc(), "wait": junk})
        assert retry_wait(bad, fp("A"), 102.5) is None, junk


def test_cycles_of_two_three_and_four_distinct_calls() -> None:
    abab = entries("A", "B", "A", "B", "A", "B")
    ev = cycle(abab, fp("A"), repeats=3, window_s=W)
    assert ev is not None and ev.kind == "cycle" and ev.count == 3 and ev.span_s == 5.0
    assert ev.calls == (label("A"), label("B"))
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
    return replace(entries("A", "B"), calls=calls, tools=tools, since=50.0)


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
        doc = history.admit("A", fp("A"), 100.0 + i, 50)
        history = History.from_doc(decode_doc(encode_doc(doc)))  # as a store keeps it
    assert len(history.t) == 50 and history.calls == 60 and history.tools == {"A": 60}
    assert history.since == 100.0 and history.t[-1] == 159.0 and history.res[-1] is None
    doc = record_result(history.to_doc(), 159.0, fp("A"), "r", True)
    history = History.from_doc(decode_doc(encode_doc(doc)))
    assert history.res[-1] == FAILED + "r" and history.failed(49) and not history.failed(48)
    assert History.from_doc(history.to_doc()) == history
    assert len(history.within(now=160.0, window_s=10.0).t) == 10
    junk: list[Any] = [
        None,
        {},
        {"v": 3},
        {"v": DOC_VERSION},
        {**doc, "t": doc["t"][1:]},  # columns of different lengths
        {**doc, "t": ["t"] * 50},
        {**doc, "t": [None, *doc["t"][1:]]},
        {**doc, "key": "A"},
        {**doc, "n": "60"},
        {**doc, "tools": {"A": "60"}},
        {**doc, "since": "then"},
    ]
    for bad in junk:
        assert History.from_doc(bad) == History(), bad


def test_a_version_1_document_reads_as_an_empty_history() -> None:
    """The layout before the columns: one [seq, t, tool, fp, result, failed] list per call."""
    old = {"v": 1, "n": 2, "since": 100.0, "tools": {"A": 2}, "h": [[1, 100.0, "A", "f", "r", 0]] * 2}
    assert History.from_doc(old) == History()
    assert record_result(old, 100.0, "A#f", "r", False) is old, "nothing of ours to record against"


def test_record_result_finds_the_call_by_time_and_key() -> None:
    doc = entries("A", "B", "A").to_doc()
    assert record_result(doc, 102.0, fp("A"), "r", False)["res"] == [None, None, "r"]
    assert record_result(doc, 100.0, fp("A"), "e", True)["res"] == [FAILED + "e", None, "r"]
    before = json.dumps(doc)
    assert json.dumps(record_result(doc, 101.0, fp("A"), "x", False)) == before, "not this call's time"
    assert json.dumps(record_result(doc, 99.0, fp("A"), "x", False)) == before, "pushed out meanwhile"


def test_fingerprints_are_stable_across_processes_and_releases() -> None:
    """Replicas sharing a store must compute the same fingerprints: no per-process hash seed. The
    values are 64-bit BLAKE2b of the tool name and the canonical JSON, pinned here."""
    assert (
        call_fingerprint("crm__get", {"n": 2, "id": "C1"}) == "a54963f10ef19b17"
    )  # crm__get\n{"id":"C1","n":2}
    assert call_key("crm__get", "a54963f10ef19b17") == "crm__get#a54963f10ef19b17"
    ok = {"content": [{"type": "text", "text": "ok"}], "_meta": {"at": 1}}
    assert result_fingerprint(ok) == "088fadca21ee9260"  # [[{"text":"ok","type":"text"}],null,null]


@pytest.mark.parametrize(
    "value",
    [
        {"b": [1, 2.5, "x"], "a": {"z": True, "y": "é\n\u2028"}},
        [1.0, 0.1, 1e300, -0.0, 2**63 - 1],
        {"big": 2**70},  # beyond orjson's integers
        {1: "int key"},  # not a JSON key: json's rules
        {"none": None},
        {"text": "annulled"},
    ],
)
def test_canonical_json_is_the_json_modules(value: Any) -> None:
    """Byte for byte what json.dumps writes for usual values (only exponents may be spelled apart)."""
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    assert _canonical(value).decode() == expected


def test_nan_and_null_stay_different_calls_and_results() -> None:
    assert call_fingerprint("t", {"x": math.nan}) != call_fingerprint("t", {"x": None})
    assert call_fingerprint("t", {"x": math.inf}) != call_fingerprint("t", {"x": None})
    nan = {"content": [], "structuredContent": {"x": math.nan}}
    assert result_fingerprint(nan) != result_fingerprint({"content": [], "structuredContent": {"x": None}})
    assert result_fingerprint({"content": []}) == result_fingerprint({"content": [], "isError": None})
    assert call_fingerprint("t", {"x": 1e-7}) == call_fingerprint("t", {"x": 0.0000001})


def test_history_size_makes_every_threshold_reachable() -> None:
    assert history_size(LoopSettings()) == 24
    assert history_size(LoopSettings(max_identical_calls=120)) == 121
    assert history_size(LoopSettings(max_identical_calls=10_000)) == 500
