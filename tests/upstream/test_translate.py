"""Retry-After as upstreams really send it: numbers, dates, and garbage that must not break a call."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from gateway.upstream.translate import from_http_status, retry_after_seconds


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("7", 7.0), (" 2.5 ", 2.5), ("-3", 0.0), ("soon", None), ("inf", None),
     ("nan", None), ("Mon, 99 Foo 2026 99:99:99 GMT", None), ("1e400", None)],
)  # fmt: skip
def test_retry_after_values(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header) == expected


def test_retry_after_as_an_http_date() -> None:
    wait = retry_after_seconds(formatdate(time.time() + 30, usegmt=True))
    assert wait is not None and 25 <= wait <= 31


def test_a_429_with_a_broken_retry_after_is_still_a_rate_limit() -> None:
    error = from_http_status("crm", 429, "whenever")
    assert error.code == "upstream_rate_limited" and error.retry_after_s is None
