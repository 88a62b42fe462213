"""Circuit breaker: stop calling an upstream that keeps failing, and probe it with a few trials."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Literal, Self

import anyio
from pydantic import model_validator

from gateway.config.models import Loc, Seconds, ToolName, problems_error
from gateway.config.policy_models import Multiplier, PositiveInt, Rate
from gateway.config.units import ExplainView, Key, PolicyTable, Rows, Unit, fields_text, merged
from gateway.core import CallNext, Clock, GatewayError, ToolCall, ToolResult
from gateway.core.errors import CircuitOpen
from gateway.core.policy import ResolvedPolicy, StoreFailure
from gateway.guards import breaker_state as machine
from gateway.guards.breaker_fallback import ResultCache, mark_cached, with_meta
from gateway.guards.breaker_state import Admission, BreakerSettings, Outcome, Report, State, Ticket
from gateway.guards.outage import store_down_error
from gateway.guards.stage import GuardDeps, LookupRunner, Stage
from gateway.guards.timeout import TIMEOUT
from gateway.guards.traits import TRAITS
from gateway.state.base import StateStore, StoreUnavailable

log = logging.getLogger("interlock.guards.breaker")

STATE_GAUGE: Mapping[str, int] = {"closed": 0, "half_open": 1, "open": 2}
"""The value of ``interlock_circuit_state{server,tool}`` for each state."""
SERVER_WIDE = ""
"""The ``tool`` label of a breaker keyed on the whole server (``per_tool = false``)."""

FAILURES = frozenset({"upstream_unavailable", "upstream_timeout", "upstream_error", "outcome_unknown"})
"""Error codes that say the upstream is unwell. Every other code is ignored: refusals by the gateway
(rate_limited, forbidden, circuit_open, ...) say nothing about it; ``invalid_arguments`` and
``not_found`` are the caller's mistakes; ``unauthorized`` means credentials, not an outage; and
``upstream_rate_limited`` means slow down, which the retry and rate-limit guards handle."""

DOC_TTL_S = 86_400.0
"""A breaker nobody called for a day is forgotten (closed)."""
RELEASE_TIMEOUT_S = 2.0
"""How long a cancelled trial may spend handing its permit back (shielded from the cancellation)."""
STORE_LOG_EVERY_S = 60.0
CACHE_ENTRIES = 1_000

OnState = Callable[[str, str, str], None]
"""``(server, tool, state)``; ``tool`` is ``SERVER_WIDE`` for a per-server breaker."""

_in_fallback: ContextVar[bool] = ContextVar("interlock_breaker_fallback", default=False)


class BreakerTable(PolicyTable):
    """Circuit breaker settings; a rule's table overrides only the keys it sets."""

    enabled: bool | None = None
    per_tool: bool | None = None
    """Key the breaker on (server, tool) instead of the server alone."""
    window_size: PositiveInt | None = None
    """Outcomes kept in the sliding window (count based)."""
    minimum_calls: PositiveInt | None = None
    """No decision on rates before this many outcomes are in the window."""
    failure_rate: Rate | None = None
    slow_call_rate: Rate | None = None
    slow_call_s: Seconds | None = None
    half_open_calls: PositiveInt | None = None
    break_s: Seconds | None = None
    max_break_s: Seconds | None = None
    break_multiplier: Multiplier | None = None
    on_store_error: StoreFailure | None = None
    fallback: Literal["none", "cached", "tool"] | None = None
    fallback_tool: ToolName | None = None
    """Exposed name of the tool called instead while the circuit is open (``fallback = "tool"``)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[tuple[Loc, str]] = []
        window, minimum = self.window_size, self.minimum_calls
        if window is not None and minimum is not None and minimum > window:
            problems.append((("minimum_calls",), f"must be <= window_size ({window})"))
        first, longest = self.break_s, self.max_break_s
        if first is not None and longest is not None and longest < first:
            problems.append((("max_break_s",), f"must be >= break_s ({first:g})"))
        if self.fallback == "tool" and self.fallback_tool is None:
            problems.append(
                (("fallback_tool",), 'required with fallback = "tool" (the tool to call instead)')
            )
        if self.fallback_tool is not None and self.fallback not in (None, "tool"):
            problems.append(
                (("fallback_tool",), f'is used only with fallback = "tool", not {self.fallback!r}')
            )
        if problems:
            raise problems_error(problems)
        return self


def _settings(values: Mapping[str, Any]) -> BreakerSettings:
    settings = replace(BreakerSettings(), **values["breaker"])
    # Each table is checked on its own at load; merged tables may still cross (a rule's
    # window_size = 5 under [defaults]' minimum_calls = 10). The window never holds more than
    # window_size outcomes, and a first break cannot exceed the longest.
    if settings.minimum_calls > settings.window_size:
        settings = replace(settings, minimum_calls=settings.window_size)
    if settings.break_s > settings.max_break_s:
        settings = replace(settings, break_s=settings.max_break_s)
    return settings


def _rows(breaker: BreakerSettings, view: ExplainView) -> Rows:
    if not breaker.enabled:
        return [("breaker", "off")]
    keyed = (
        f"per tool ({view.server!r}, {view.tool!r})" if breaker.per_tool else f"per server {view.server!r}"
    )
    fallback = "" if breaker.fallback == "none" else f" fallback={breaker.fallback}"
    if breaker.fallback == "tool":
        fallback += f" fallback_tool={breaker.fallback_tool}"
    skip = ("enabled", "per_tool", "fallback", "fallback_tool")
    return [("breaker", f"on, {keyed}: {fields_text(breaker, skip)}{fallback}")]


BREAKER: Unit[BreakerSettings] = Unit(
    name="breaker",
    default=BreakerSettings(),
    keys={"breaker": Key(BreakerTable, "Circuit breaker per upstream (merged key by key).", combine=merged)},
    build=_settings,
    rows=_rows,
)


def classify(outcome: ToolResult | BaseException) -> Outcome:
    """The breaker's view of how a call ended."""
    if isinstance(outcome, ToolResult):
        return Outcome.IGNORED if outcome.is_error else Outcome.SUCCESS
    if isinstance(outcome, GatewayError):
        return Outcome.FAILURE if outcome.code in FAILURES else Outcome.IGNORED
    return Outcome.IGNORED  # a bug in the gateway or a cancelled client is not an outage


def permit_lease_s(policy: ResolvedPolicy) -> float:
    """How long a half-open trial may stay silent before its permit is handed to someone else."""
    return max(2.0 * policy.of(BREAKER).slow_call_s, policy.of(TIMEOUT).timeout_s or 0.0)


class CircuitBreaker:
    """Fails fast while an upstream keeps failing, and lets exactly N trial calls find out if it is back.

    Semantics of Resilience4j and Envoy outlier detection, on the shared state store, so every replica
    sees the same breaker (the state machine is ``breaker_state``):

    - closed: outcomes go into a count-based window of the last ``window_size`` calls; once it holds
      ``minimum_calls`` outcomes, a failure rate >= ``failure_rate`` or a slow-call rate >=
      ``slow_call_rate`` (slower than ``slow_call_s``, whatever the outcome) opens the circuit. The
      call that trips it still gets its own error.
    - open: every call is refused at once with ``circuit_open`` and the exact remaining break as
      ``retry_after_s``; the upstream is not called. Fallbacks (``breaker.fallback``) answer instead
      when configured: the last good result of the same call for a read-only tool (``cached``), or
      another tool (``tool``).
    - half_open: after the break, exactly ``half_open_calls`` trial permits are handed out, atomically
      through the store; other calls are refused. All trials succeed: closed, and the break resets.
      One fails: open again, the break multiplied by ``break_multiplier`` up to ``max_break_s``, ±10 %
      jitter. A permit whose holder never reports back lapses after ``permit_lease_s``; a cancelled
      trial hands its permit back.

    Outcomes: failure is ``upstream_unavailable``, ``upstream_timeout``, ``upstream_error`` and
    ``outcome_unknown``; success is any result that is not ``isError``; everything else is ignored
    (see ``FAILURES``): the tool's own ``isError`` results, guard refusals, invalid arguments, 401s,
    429s and cancelled clients neither count nor reset the window.

    Keys on: ``breaker:{server}``, or ``breaker:{server}:{tool}`` with ``breaker.per_tool``. Two store
    updates per call (one before, one after). When the store fails, ``breaker.on_store_error`` says
    whether calls go on unprotected (``open``, logged once a minute) or are refused with
    ``state_unavailable`` (``closed``).

    Position: retry → breaker → timeout → classify → upstream. Below retry, so each attempt counts and
    an open circuit stops the retries at once; above timeout and classify, so a timeout counts as one
    failure and the breaker sees the typed errors classify makes of an upstream's ``isError`` text.
    """

    def __init__(
        self,
        store: StateStore,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        on_state: OnState | None = None,
        fallback_runner: LookupRunner | None = None,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.store = store
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_state = on_state
        self.fallback_runner = fallback_runner
        self._cache = ResultCache(cache_entries)
        self._seen: dict[str, str] = {}
        self._store_logged_at: float | None = None

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        settings = call.policy.of(BREAKER)
        if not settings.enabled:
            return await call_next(call)
        key, label = breaker_key(call)
        admission = await self._before(call, settings, key, label)
        if admission is None:  # the store failed and the policy lets calls through
            return await call_next(call)
        if not admission.allowed:
            return await self._refused(call, settings, admission, key, label)
        ticket = admission.ticket
        assert ticket is not None
        started = self.clock.monotonic()
        try:
            result = await call_next(call)
        except Exception as exc:
            await self._after(call, settings, key, label, ticket, classify(exc), started)
            raise
        except BaseException:  # cancelled: no outcome, but a trial's permit must go back
            if ticket.permit is not None:
                await self._release(call, key, label, ticket)
            raise
        outcome = classify(result)
        await self._after(call, settings, key, label, ticket, outcome, started)
        if outcome is Outcome.SUCCESS and settings.fallback == "cached" and _read_only(call):
            self._cache.put(call, result, self.clock.monotonic())
        return result

    async def _before(
        self, call: ToolCall, settings: BreakerSettings, key: str, label: str
    ) -> Admission | None:
        now = self.clock.wall()
        permit_id = uuid.uuid4().hex[:16]
        lease_s = permit_lease_s(call.policy)

        def updater(doc: dict[str, Any] | None) -> tuple[dict[str, Any] | None, Any]:
            return machine.before(doc, settings, now=now, permit_id=permit_id, lease_s=lease_s)

        try:
            admission: Admission = await self.store.update(key, updater, ttl_s=_ttl(settings))
        except StoreUnavailable as exc:
            self._log_store(key, exc)
            if settings.on_store_error == "open":
                return None
            raise store_down_error(f"the circuit for {_who(call, label)}", exc, {"breaker": key}) from exc
        self._observe(call.server, label, key, admission.entered, admission.state)
        return admission

    async def _after(
        self,
        call: ToolCall,
        settings: BreakerSettings,
        key: str,
        label: str,
        ticket: Ticket,
        outcome: Outcome,
        started: float,
    ) -> None:
        if outcome is Outcome.IGNORED and ticket.permit is None:
            return  # nothing to record: an ignored outcome neither counts nor resets the window
        slow = self.clock.monotonic() - started > settings.slow_call_s
        now = self.clock.wall()
        jitter = self.rng.uniform(1.0 - machine.JITTER, 1.0 + machine.JITTER)

        def updater(doc: dict[str, Any] | None) -> tuple[dict[str, Any] | None, Any]:
            return machine.after(doc, settings, ticket, outcome, slow=slow, now=now, jitter=jitter)

        try:
            report: Report = await self.store.update(key, updater, ttl_s=_ttl(settings))
        except StoreUnavailable as exc:  # the call's own outcome stands; a trial permit lapses
            self._log_store(key, exc)
            return
        if "open" in report.entered:
            log.warning("circuit for %s opened on the outcome of [%s]", _who(call, label), call.request_id)
        self._observe(call.server, label, key, report.entered, report.state)

    async def _release(self, call: ToolCall, key: str, label: str, ticket: Ticket) -> None:
        def updater(doc: dict[str, Any] | None) -> tuple[dict[str, Any] | None, Any]:
            return machine.release(doc, ticket)

        # The caller is being cancelled: shield the hand-back, but bound it.
        with anyio.move_on_after(RELEASE_TIMEOUT_S, shield=True):
            try:
                report: Report = await self.store.update(key, updater, ttl_s=_ttl(call.policy.of(BREAKER)))
            except StoreUnavailable as exc:
                self._log_store(key, exc)
                return
            self._observe(call.server, label, key, report.entered, report.state)

    async def _refused(
        self, call: ToolCall, settings: BreakerSettings, admission: Admission, key: str, label: str
    ) -> ToolResult:
        retry_after = round(admission.retry_after_s, 3)
        error = CircuitOpen(
            f"{_who(call, label)} is failing; the gateway stopped calling it for {retry_after:g}s",
            retry_after_s=retry_after,
            details={"state": admission.state, "breaker": key},
        )
        if settings.fallback == "cached" and _read_only(call):
            cached = self._cache.get(call)
            if cached is None:
                raise error
            result, stored_at = cached
            return mark_cached(result, self.clock.monotonic() - stored_at)
        if settings.fallback == "tool":
            return await self._fallback_tool(call, settings, error)
        raise error

    async def _fallback_tool(
        self, call: ToolCall, settings: BreakerSettings, error: CircuitOpen
    ) -> ToolResult:
        name = settings.fallback_tool
        if name is None or self.fallback_runner is None or name == call.exposed_name or _in_fallback.get():
            raise error  # no runner, or a fallback chain that would loop
        error.details["fallback_tool"] = name
        token = _in_fallback.set(True)
        try:
            result = await self.fallback_runner(name, call.arguments, call.caller)
        except GatewayError as exc:
            error.details["fallback_error"] = exc.code
            raise error from exc
        finally:
            _in_fallback.reset(token)
        marked = with_meta(result.raw, {"kind": "tool", "tool": name})
        return ToolResult(marked, result.notes).noted("fallback_tool")

    def _observe(self, server: str, label: str, key: str, entered: tuple[State, ...], state: State) -> None:
        """Report transitions this step made, and states another replica moved the breaker into."""
        if self.on_state is None:
            return
        for step in (*entered, state):
            if self._seen.get(key) != step:
                self._seen[key] = step
                self.on_state(server, label, step)

    def _log_store(self, key: str, exc: StoreUnavailable) -> None:
        now = self.clock.monotonic()
        if self._store_logged_at is not None and now - self._store_logged_at < STORE_LOG_EVERY_S:
            return
        self._store_logged_at = now
        log.warning("state store unreachable for circuit breaker %s: %s", key, exc)


def breaker_key(call: ToolCall) -> tuple[str, str]:
    """(store key, tool label for the metric)."""
    if call.policy.of(BREAKER).per_tool:
        return f"breaker:{call.server}:{call.tool}", call.tool
    return f"breaker:{call.server}", SERVER_WIDE


def _read_only(call: ToolCall) -> bool:
    """Only a tool that changes nothing may be answered from an old result."""
    return call.policy.of(TRAITS).is_read_only(call.annotations)


def _who(call: ToolCall, label: str) -> str:
    return f"{call.server} tool {label!r}" if label else f"server {call.server!r}"


def _ttl(settings: BreakerSettings) -> float:
    return max(DOC_TTL_S, 2.0 * settings.max_break_s)


def _build(deps: GuardDeps) -> CircuitBreaker:
    return CircuitBreaker(
        deps.store, deps.clock, on_state=deps.events.circuit_state, fallback_runner=deps.lookup
    )


STAGE = Stage("breaker", _build, BREAKER)
