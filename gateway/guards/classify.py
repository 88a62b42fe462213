"""Classify: turn an upstream's ``isError`` result into the typed error it describes.

An upstream that wraps a REST API usually reports "429 Too Many Requests" or "401 Unauthorized" as
the *text* of an ``isError`` result. Agents misread those (they ask the user for a password, or
report a rate-limited service as down), and the outer guards cannot act on prose. This guard reads
the text and raises the matching ``GatewayError``, so retry and the circuit breaker see typed
failures and the agent gets one error shape with a hint.
"""

from __future__ import annotations

import email.utils
import logging
import re
from dataclasses import dataclass
from typing import Self

from pydantic import model_validator

from gateway.config.models import NonEmpty, problems_error
from gateway.config.policy_models import code_type, regex_problem
from gateway.config.units import ExplainView, Key, PolicyTable, Rows, Unit, appended
from gateway.core import CallNext, Clock, SystemClock, ToolCall, ToolResult
from gateway.core import errors as e
from gateway.guards.stage import GuardDeps, Stage

log = logging.getLogger("interlock.guards.classify")

SCAN_CHARS = 4096
"""Only the start of an error text is read: the status is always there, and it bounds the cost."""
TEXT_CHARS = 500
"""How much of the upstream's own words travel in ``details.upstream_text``."""

_I = re.IGNORECASE

# A status code counts only where something says it is one ("HTTP 429", "status: 503",
# "error 500", '"code": 404'), or at the very start of the text before a separator or a reason
# phrase ("500: ...", "429 Too Many Requests"), so "order 401 shipped" or "404 rows" stay prose.
_STATUS_IN_CONTEXT = re.compile(
    r"\b(?:HTTP(?:/\d(?:\.\d)?)?|status(?:[ _-]?code)?|error(?:[ _-]?code)?|code)"
    r"[\"']?\s*[:=#]?\s*[\"']?(?P<status>[45]\d\d)\b(?![.,]\d|\s*%)",
    _I,
)
_STATUS_AT_START = re.compile(r"^\s*(?P<status>[45]\d\d)\b(?=\s*(?:[:\-\u2013]|$|[A-Z][a-z]))")

_STATUS_CODES: dict[int, type[e.GatewayError]] = {
    400: e.InvalidArguments,
    401: e.Unauthorized,
    403: e.Forbidden,
    404: e.NotFound,
    408: e.UpstreamTimeout,
    409: e.Conflict,
    410: e.NotFound,
    422: e.InvalidArguments,
    429: e.UpstreamRateLimited,
    500: e.UpstreamError,
    502: e.UpstreamUnavailable,
    503: e.UpstreamUnavailable,
    504: e.UpstreamUnavailable,
}
"""Statuses the classifier names; any other 5xx is ``upstream_error``, any other 4xx is left alone."""


PATTERN_CODES: tuple[str, ...] = tuple(
    error.code for error in e.ALL_ERRORS if error.plane == "tool" and error.code != "internal_error"
)
"""Codes an upstream ``isError`` text can be classified as: tool-plane codes, except the
gateway's own ``internal_error`` (an upstream's failure is never the gateway's)."""


@dataclass(frozen=True, slots=True)
class ErrorPattern:
    """Classifies an upstream ``isError`` result by its text."""

    code: str
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class ClassifySettings:
    patterns: tuple[ErrorPattern, ...] = ()
    """The policy's ``error_patterns``, tried before the built-in ones."""


class ErrorPatternTable(PolicyTable):
    """An extra classifier of upstream ``isError`` results: text matching ``pattern`` gets ``code``."""

    code: code_type(PATTERN_CODES)  # type: ignore[valid-type]
    pattern: NonEmpty

    @model_validator(mode="after")
    def _compiles(self) -> Self:
        if problem := regex_problem(self.pattern):
            raise problems_error([(("pattern",), problem)])
        return self


def _rows(settings: ClassifySettings, view: ExplainView) -> Rows:
    return [("error_pattern", f"{p.code} <- {p.pattern.pattern!r}") for p in settings.patterns]


CLASSIFY: Unit[ClassifySettings] = Unit(
    name="classify",
    default=ClassifySettings(),
    keys={
        "error_patterns": Key(
            list[ErrorPatternTable],
            "Classify upstream isError texts by regular expression (every matching rule's patterns).",
            combine=appended,
            convert=lambda tables, rule: tuple(ErrorPattern(t.code, re.compile(t.pattern)) for t in tables),
        )
    },
    build=lambda values: ClassifySettings(values["error_patterns"]),
    rows=_rows,
)


@dataclass(frozen=True, slots=True)
class _Phrase:
    name: str
    error: type[e.GatewayError]
    pattern: re.Pattern[str]


# Tried in order after the status codes: the first match wins. Gateway timeouts come before the
# generic "timed out" (504 is the proxy in front of the service, not the tool), and words that are
# also setting names ("timeout") must not be followed by what makes them a parameter.
_PHRASES: tuple[_Phrase, ...] = (
    _Phrase(
        "unauthorized",
        e.Unauthorized,
        re.compile(
            r"\bunauthori[sz]ed\b|\binvalid[ _-](?:api[ _-]?key|(?:access[ _-])?token|credentials?)\b"
            r"|\b(?:token|credentials?)\s+(?:has\s+|have\s+|is\s+|are\s+)?(?:expired|revoked)\b"
            r"|\bauthentication\s+(?:failed|required)\b",
            _I,
        ),
    ),
    _Phrase("forbidden", e.Forbidden, re.compile(r"\bforbidden\b|\bpermission\s+denied\b", _I)),
    _Phrase(
        "rate_limited",
        e.UpstreamRateLimited,
        re.compile(
            r"\btoo\s+many\s+requests\b|\brate[ _-]?limit(?:ed|s)?\b|\bquota\s+(?:has\s+been\s+)?exceeded\b"
            r"|\bthrottled\b",
            _I,
        ),
    ),
    _Phrase(
        "unavailable",
        e.UpstreamUnavailable,
        re.compile(
            r"\bservice\s+(?:is\s+)?(?:temporarily\s+)?unavailable\b|\bbad\s+gateway\b"
            r"|\bgateway\s+time-?out\b|\bconnection\s+refused\b",
            _I,
        ),
    ),
    _Phrase(
        "timeout",
        e.UpstreamTimeout,
        re.compile(
            r"\btimed\s+out\b|\bdeadline\s+exceeded\b"
            r"|\btime-?out\b(?!\s*(?:param|arg|value|field|option|setting|must|should|=|:\s*\d))",
            _I,
        ),
    ),
    _Phrase(
        "not_found",
        e.NotFound,
        re.compile(r"\bnot\s+found\b|\bdoes\s*n[o']t\s+exist\b|\bno\s+such\s+\w+", _I),
    ),
    _Phrase("conflict", e.Conflict, re.compile(r"\bconflict\b|\balready\s+exists\b", _I)),
    _Phrase("internal_server_error", e.UpstreamError, re.compile(r"\binternal\s+server\s+error\b", _I)),
    _Phrase("bad_request", e.InvalidArguments, re.compile(r"\bbad\s+request\b", _I)),
)

_UNIT = r"(?P<unit>ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)\b"
_RETRY_AFTER = re.compile(
    r"\bretry[ _-]?after[\"']?\s*[:=]?\s*[\"']?(?P<n>\d+(?:\.\d+)?)\s*(?:" + _UNIT + ")?", _I
)
_RETRY_AFTER_DATE = re.compile(
    r"\bretry[ _-]?after\s*:\s*(?P<date>\w{3},\s+\d{1,2}\s+\w{3}\s+\d{4}\s+[\d:]+\s+GMT)", _I
)
_TRY_AGAIN_IN = re.compile(
    r"\b(?:(?:try|retry)(?:\s+again)?\s+in|wait(?:\s+for)?|resets?\s+in)\s+(?P<n>\d+(?:\.\d+)?)\s*" + _UNIT,
    _I,
)


def retry_after_from_text(text: str, now_wall: float) -> float | None:
    """Seconds to wait, as an upstream wrote it: "Retry-After: 2", "retry after 3 seconds",
    "try again in 5s", "Retry-After: <HTTP date>"."""
    for regex in (_RETRY_AFTER, _TRY_AGAIN_IN):
        found = regex.search(text)
        if found:
            return float(found.group("n")) * _unit_seconds(found.group("unit"))
    dated = _RETRY_AFTER_DATE.search(text)
    if dated:
        try:
            when = email.utils.parsedate_to_datetime(dated.group("date"))
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - now_wall)
    return None


def _unit_seconds(unit: str | None) -> float:
    unit = (unit or "s").lower()
    if unit == "ms" or unit.startswith("milli"):
        return 0.001
    if unit.startswith("m"):
        return 60.0
    return 1.0


def _match(call: ToolCall, text: str) -> tuple[type[e.GatewayError], str, int | None] | None:
    """The error class, the name of the pattern that matched, and the HTTP status if one was read."""
    for index, custom in enumerate(call.policy.of(CLASSIFY).patterns):
        if custom.pattern.search(text):
            cls = e.BY_CODE.get(custom.code)
            if cls is None or cls.plane != "tool":  # the loader validates; never fail a call over it
                log.warning("policy error pattern %d names no tool-plane code: %r", index, custom.code)
                continue
            return cls, f"policy:{custom.pattern.pattern}", None
    status = _STATUS_AT_START.match(text) or _STATUS_IN_CONTEXT.search(text)
    if status:
        number = int(status.group("status"))
        cls = _STATUS_CODES.get(number) or (e.UpstreamError if number >= 500 else None)
        if cls is not None:
            return cls, f"status:{number}", number
    for phrase in _PHRASES:
        if phrase.pattern.search(text):
            return phrase.error, f"phrase:{phrase.name}", None
    return None


class Classify:
    """Raises the typed ``GatewayError`` an upstream's ``isError`` text describes.

    Refuses/changes: an ``isError`` result whose text matches a pattern becomes an exception
    (``unauthorized``, ``upstream_rate_limited`` with ``retry_after_s`` parsed from the text,
    ``upstream_unavailable``, ``upstream_timeout``, ``upstream_error``, ``invalid_arguments``, ...).
    ``details`` carry ``upstream_text`` (the first 500 characters) and ``matched`` (which pattern).
    Unmatched ``isError`` results pass through unchanged (the tool's own words); results that are not
    errors are never read.

    Keys on: the text blocks of the result; the policy's ``error_patterns`` are tried first, then
    HTTP statuses written in the text, then the built-in phrases (see docs/errors.md).

    Position: innermost, right above the upstream, so every outer guard (timeout, circuit breaker,
    retry, rewrite) sees a typed failure rather than prose.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        result = await call_next(call)
        if not result.is_error:
            return result
        text = result.text()
        head = text[:SCAN_CHARS]
        found = _match(call, head)
        if found is None:
            return result
        cls, matched, status = found
        raise self._error(call, cls, matched, status, text)

    def _error(
        self, call: ToolCall, cls: type[e.GatewayError], matched: str, status: int | None, text: str
    ) -> e.GatewayError:
        quoted = " ".join(text.split())[:200]
        details: dict[str, object] = {"upstream_text": text[:TEXT_CHARS], "matched": matched}
        if status is not None:
            details["http_status"] = status
        retry_after = None
        if cls.retryable:
            retry_after = retry_after_from_text(text[:SCAN_CHARS], self.clock.wall())
        hint = None
        if cls is e.InvalidArguments:
            hint = (
                f"The tool rejected the arguments: {quoted!r}. Change what that message names and call "
                "again; do not guess values."
            )
        message = f"{call.server} tool {call.tool!r} failed ({cls.code}): {quoted}"
        # The upstream's own words, typed: the upstream failed, no guard refused.
        return cls(message, hint=hint, retry_after_s=retry_after, details=details, guard=e.UPSTREAM)


def _build(deps: GuardDeps) -> Classify:
    return Classify(deps.clock)


STAGE = Stage("classify", _build, CLASSIFY)
