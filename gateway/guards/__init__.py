"""The guards, and the one place that fixes their order.

The order is part of the design, not configuration: each line says why its guard stands where it
does. Outermost first; guards that work on results (output, size cap, reminders) act on the way
back, so they stand outside the guards whose outcomes they should see.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core import Guard
from gateway.core.clock import Clock
from gateway.guards.access import Access
from gateway.guards.classify import Classify
from gateway.guards.output import OutputValidation, ResultSizeCap
from gateway.guards.pinning import PinBook, PinGuard
from gateway.guards.references import LookupRunner, ReferenceChecks
from gateway.guards.reminders import Reminders
from gateway.guards.resolve import Resolve, Resolver
from gateway.guards.retry import MemoryRetryBudget, Retry, RetryBudget
from gateway.guards.rewrite import Rewrite
from gateway.guards.timeout import Timeout
from gateway.guards.validation import ArgumentValidation, SchemaCache


@dataclass
class GuardDeps:
    resolver: Resolver
    pins: PinBook
    lookup: LookupRunner
    clock: Clock
    budget: RetryBudget | None = None


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
        ArgumentValidation(schemas),  # the upstream never sees invalid arguments; nor will a human approver
        ReferenceChecks(deps.lookup, deps.clock),  # after validation: look up only well-formed ids
        Retry(deps.clock, budget),  # inside validation (nothing to re-check); only idempotent tools retry
        Timeout(deps.clock),  # each attempt gets its own limit; a non-idempotent timeout is outcome_unknown
        Classify(deps.clock),  # innermost: upstream isError text becomes typed errors, for retry above
    ]


__all__ = ["GuardDeps", "ordered_guards"]
