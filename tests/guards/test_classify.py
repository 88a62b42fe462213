"""Classify turns an upstream's isError text into the typed error it describes, and nothing else."""

from __future__ import annotations

import logging
import re

import pytest

from gateway.core import ManualClock, ToolCall, ToolResult, build_chain
from gateway.core import errors as e
from gateway.core.policy import ResolvedPolicy
from gateway.guards.classify import Classify, ClassifySettings, ErrorPattern, retry_after_from_text
from tests.calls import Recorder, policy_of, tool_call

pytestmark = pytest.mark.anyio


def _call(policy: ResolvedPolicy | None = None) -> ToolCall:
    return tool_call("crm", "search", {"q": "acme"}, policy=policy)


Upstream = Recorder


async def _classify(text: str, *, policy: ResolvedPolicy | None = None, is_error: bool = True) -> ToolResult:
    chain = build_chain([Classify(ManualClock())], Upstream(ToolResult.of_text(text, is_error=is_error)))
    return await chain(_call(policy))


async def _raised(text: str, policy: ResolvedPolicy | None = None) -> e.GatewayError:
    with pytest.raises(e.GatewayError) as caught:
        await _classify(text, policy=policy)
    return caught.value


@pytest.mark.parametrize(
    ("text", "code", "matched", "retry_after"),
    [
        ("401 Unauthorized", "unauthorized", "status:401", None),
        ("Request failed: HTTP 401", "unauthorized", "status:401", None),
        ("Unauthorized", "unauthorized", "phrase:unauthorized", None),
        ("error: invalid token", "unauthorized", "phrase:unauthorized", None),
        ("Invalid credentials for account", "unauthorized", "phrase:unauthorized", None),
        ("403 Forbidden", "forbidden", "status:403", None),
        ("Forbidden: you cannot edit this board", "forbidden", "phrase:forbidden", None),
        ("404 Not Found", "not_found", "status:404", None),
        ("customer C000042 not found", "not_found", "phrase:not_found", None),
        ("The invoice does not exist", "not_found", "phrase:not_found", None),
        ("409 Conflict", "conflict", "status:409", None),
        ("Conflict: the record was modified", "conflict", "phrase:conflict", None),
        ("429 Too Many Requests. Retry-After: 2", "upstream_rate_limited", "status:429", 2.0),
        ("Too Many Requests", "upstream_rate_limited", "phrase:rate_limited", None),
        ("Rate limited; retry after 3 seconds", "upstream_rate_limited", "phrase:rate_limited", 3.0),
        ("rate limit reached, try again in 5s", "upstream_rate_limited", "phrase:rate_limited", 5.0),
        ("Monthly quota exceeded", "upstream_rate_limited", "phrase:rate_limited", None),
        ("502 Bad Gateway", "upstream_unavailable", "status:502", None),
        ("HTTP 503: Service Unavailable. Retry-After: 10", "upstream_unavailable", "status:503", 10.0),
        ("status code: 504", "upstream_unavailable", "status:504", None),
        ("Service Unavailable", "upstream_unavailable", "phrase:unavailable", None),
        ("Bad Gateway", "upstream_unavailable", "phrase:unavailable", None),
        ("The request timed out", "upstream_timeout", "phrase:timeout", None),
        ("Timeout while reading from the database", "upstream_timeout", "phrase:timeout", None),
        ("500 Internal Server Error", "upstream_error", "status:500", None),
        ("Internal Server Error", "upstream_error", "phrase:internal_server_error", None),
        ('{"status": 500, "message": "boom"}', "upstream_error", "status:500", None),
        ("error 599", "upstream_error", "status:599", None),
        ("400 Bad Request: 'email' must be a valid address", "invalid_arguments", "status:400", None),
        ("Bad Request", "invalid_arguments", "phrase:bad_request", None),
    ],
)
async def test_built_in_patterns(text: str, code: str, matched: str, retry_after: float | None) -> None:
    err = await _raised(text)
    assert err.code == code
    assert err.details["matched"] == matched
    assert err.details["upstream_text"] == text
    assert err.retry_after_s == retry_after
    assert text in err.message and "crm" in err.message


async def test_a_status_in_the_text_beats_the_words_around_it() -> None:
    err = await _raised("Error 500: the database timed out")
    assert err.code == "upstream_error"
    assert err.details["http_status"] == 500


@pytest.mark.parametrize(
    "text",
    [
        "Order 401 shipped late, cannot cancel",
        "404 rows failed validation",
        "the timeout parameter must be positive",
        "invalid value for timeout_s",
        "Something unexpected happened",
        "API returned status 418",
    ],
)
async def test_unmatched_error_results_pass_through_unchanged(text: str) -> None:
    upstream_result = ToolResult.of_text(text, is_error=True)
    chain = build_chain([Classify(ManualClock())], Upstream(upstream_result))
    assert await chain(_call()) is upstream_result


async def test_results_that_are_not_errors_are_never_read() -> None:
    result = await _classify("HTTP 401 Unauthorized, 429 Too Many Requests", is_error=False)
    assert not result.is_error
    assert "401" in result.text()


async def test_policy_patterns_are_tried_first_and_named_in_details() -> None:
    policy = policy_of(
        classify=ClassifySettings(
            (
                ErrorPattern("not_found", re.compile(r"(?i)no customer with id")),
                ErrorPattern("upstream_rate_limited", re.compile(r"(?i)slow down")),
            )
        )
    )
    err = await _raised("500 Internal Server Error: slow down, retry after 4 seconds", policy)
    assert err.code == "upstream_rate_limited"
    assert err.details["matched"] == "policy:(?i)slow down"
    assert err.retry_after_s == 4.0
    err = await _raised("No customer with id C9", policy)
    assert err.code == "not_found"


async def test_a_policy_pattern_without_a_tool_plane_code_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = policy_of(
        classify=ClassifySettings(
            (
                ErrorPattern("no_such_code", re.compile("boom")),
                ErrorPattern("unknown_tool", re.compile("boom")),  # protocol plane: not for results
            )
        )
    )
    with caplog.at_level(logging.WARNING, "interlock.guards.classify"):
        err = await _raised("boom: 503 Service Unavailable", policy)
    assert err.code == "upstream_unavailable"
    assert "no_such_code" in caplog.text and "unknown_tool" in caplog.text


async def test_upstream_text_is_cut_to_500_characters() -> None:
    text = "429 Too Many Requests " + "x" * 2_000
    err = await _raised(text)
    assert err.details["upstream_text"] == text[:500]
    assert len(err.message) < 400


async def test_a_400_hint_says_what_to_change_in_the_upstreams_words() -> None:
    err = await _raised("400 Bad Request: field 'due_date' must be YYYY-MM-DD")
    assert isinstance(err, e.InvalidArguments)
    assert "field 'due_date' must be YYYY-MM-DD" in err.hint
    assert "do not guess" in err.hint


async def test_default_hints_answer_the_usual_misreadings() -> None:
    assert "do not ask the user for a password" in (await _raised("401 Unauthorized")).hint.lower()
    assert "not down" in (await _raised("429 Too Many Requests")).hint
    assert "do not invent a result" in (await _raised("500 Internal Server Error")).hint


async def test_retry_after_is_read_only_for_retryable_codes() -> None:
    err = await _raised("404 Not Found; retry after 3 seconds")
    assert err.code == "not_found" and err.retry_after_s is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Retry-After: 2", 2.0),
        ("retry_after=1.5", 1.5),
        ('{"retry_after": 7}', 7.0),
        ("retry after 3 seconds", 3.0),
        ("try again in 5s", 5.0),
        ("please retry in 2 minutes", 120.0),
        ("wait 500ms", 0.5),
        ("nothing to see", None),
    ],
)
def test_retry_after_from_text(text: str, seconds: float | None) -> None:
    assert retry_after_from_text(text, now_wall=0.0) == seconds


def test_retry_after_as_an_http_date_uses_the_clocks_wall_time() -> None:
    # 07:28:00 GMT is ten seconds after the given wall time.
    text = "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after_from_text(text, now_wall=1445412470.0) == 10.0
