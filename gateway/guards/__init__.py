"""The guards, and the one place that fixes their order.

The order is part of the design, not configuration: each line says why its guard stands where it
does. Outermost first; guards that work on results (output, size cap, reminders) act on the way
back, so they stand outside the guards whose outcomes they should see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.core import Guard
from gateway.core.clock import Clock
from gateway.guards.access import Access
from gateway.guards.breaker import CircuitBreaker, OnState
from gateway.guards.classify import Classify
from gateway.guards.concurrency import Concurrency
from gateway.guards.loops import LoopDetection
from gateway.guards.output import OutputValidation, ResultSizeCap
from gateway.guards.pinning import PinBook, PinGuard
from gateway.guards.ratelimit import RateLimits
from gateway.guards.references import LookupRunner, ReferenceChecks
from gateway.guards.reminders import Reminders
from gateway.guards.resolve import Resolve, Resolver
from gateway.guards.retry import MemoryRetryBudget, Retry, RetryBudget
from gateway.guards.rewrite import Rewrite
from gateway.guards.timeout import Timeout
from gateway.guards.validation import ArgumentValidation, SchemaCache
from gateway.state.base import StateStore


@dataclass
class GuardDeps:
    resolver: Resolver
    pins: PinBook
    lookup: LookupRunner
    clock: Clock
    store: StateStore
    budget: RetryBudget | None = None
    on_circuit_state: OnState | None = None
    on_rate_limited: Callable[[str, str], None] | None = None
    on_loop: Callable[[str], None] | None = None
    approval: Guard | None = None
    """The human approval gate (``gateway.approvals``), which lives above this layer."""


def ordered_guards(deps: GuardDeps) -> list[Guard]:
    """Build the guards once; the chain is folded from this list (see ``gateway.core.build_chain``)."""
    schemas = SchemaCache()  # one compiled-validator cache for arguments and outputs
    budget = deps.budget or MemoryRetryBudget(deps.clock)
    return [
        Resolve(deps.resolver),  # first: every later step reads the one policy resolved for this call
        Rewrite(),  # sees every outcome: the policy's hints, and bugs made into safe internal errors
        Reminders(),  # next to results and to the refusals of every guard below it
        ResultSizeCap(),  # cuts the final result, outside output validation so it judges the whole
        OutputValidation(schemas, deps.clock),  # on the way back: the result the agent will read
        Access(),  # refuse what this client may not call before spending anything on it
        PinGuard(deps.pins),  # a tool swapped upstream is as good as absent
        # Before validation: an agent repeating the same invalid call is looping too.
        LoopDetection(deps.store, deps.clock, on_detected=deps.on_loop, on_limited=deps.on_rate_limited),
        RateLimits(deps.store, deps.clock, on_limited=deps.on_rate_limited),  # cost control, before any work
        ArgumentValidation(schemas),  # the upstream never sees invalid arguments; nor will a human approver
        ReferenceChecks(deps.lookup, deps.clock),  # after validation: look up only well-formed ids
        # A human is asked only about a call that would otherwise run: valid, with real references.
        # Above retry: one approval covers the retries of the call it approved.
        *([deps.approval] if deps.approval is not None else []),
        Retry(deps.clock, budget),  # inside validation (nothing to re-check); only idempotent tools retry
        # Each attempt counts; an open circuit stops retries at once; sees classify's typed errors.
        CircuitBreaker(deps.store, deps.clock, on_state=deps.on_circuit_state, fallback_runner=deps.lookup),
        # Below the breaker (an open circuit never waits for a slot); each attempt takes its own slot.
        Concurrency(deps.store, deps.clock, on_limited=deps.on_rate_limited),
        Timeout(deps.clock),  # each attempt gets its own limit; a non-idempotent timeout is outcome_unknown
        Classify(deps.clock),  # innermost: upstream isError text becomes typed errors, for retry above
    ]


__all__ = ["GuardDeps", "ordered_guards"]
