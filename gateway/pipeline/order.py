"""The one place that fixes the order of the call pipeline.

The order is part of the design, not configuration: each line says why its stage stands where it
does. Outermost first; guards that work on results (output, size cap, reminders) act on the way
back, so they stand outside the guards whose outcomes they should see. Everything that depends on
the set of guards is derived from ``STAGES``: the policy files' keys and how they combine
(``UNITS``), ``policy explain``, the JSON Schema of policy files, and the ``guard`` that names a
refusal in errors, logs and metrics. Adding a guard is its module plus one line here.
"""

from __future__ import annotations

from typing import Any

from gateway.approvals import gate
from gateway.config.units import Unit
from gateway.guards import (
    access,
    breaker,
    classify,
    concurrency,
    loops,
    output,
    pinning,
    ratelimit,
    references,
    reminders,
    resolve,
    retry,
    rewrite,
    timeout,
    traits,
    validation,
)
from gateway.guards.stage import Stage

STAGES: tuple[Stage, ...] = (
    traits.STAGE,  # settings only: whether a tool is safe to repeat, read by retry, timeout, breaker, gate
    resolve.STAGE,  # first: every later step reads the one policy resolved for this call
    rewrite.STAGE,  # sees every outcome: the policy's hints, and bugs made into safe internal errors
    reminders.STAGE,  # next to results and to the refusals of every guard below it
    output.SIZE_CAP_STAGE,  # cuts the final result, outside output validation so it judges the whole
    output.OUTPUT_STAGE,  # on the way back: the result the agent will read
    access.STAGE,  # refuse what this client may not call before spending anything on it
    pinning.STAGE,  # a tool swapped upstream is as good as absent
    loops.STAGE,  # before validation: an agent repeating the same invalid call is looping too
    ratelimit.STAGE,  # cost control, before any work
    validation.STAGE,  # the upstream never sees invalid arguments; nor will a human approver
    references.STAGE,  # after validation: look up only well-formed ids
    # A human is asked only about a call that would otherwise run: valid, with real references.
    # Above retry: one approval covers the retries of the call it approved.
    gate.STAGE,
    retry.STAGE,  # inside validation (nothing to re-check); only idempotent tools retry
    breaker.STAGE,  # each attempt counts; an open circuit stops retries at once; sees classify's typed errors
    concurrency.STAGE,  # below the breaker: an open circuit never waits for a slot; each attempt its own
    timeout.STAGE,  # each attempt gets its own limit; a non-idempotent timeout is outcome_unknown
    classify.STAGE,  # innermost: upstream isError text becomes typed errors, for retry above
)

UNITS: tuple[Unit[Any], ...] = tuple(stage.unit for stage in STAGES if stage.unit is not None)
"""Every stage's settings, in pipeline order."""

GUARD_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES if stage.build is not None)
"""The names a refusal can carry (``details.guard``, the ``guard`` metric label), in order."""
