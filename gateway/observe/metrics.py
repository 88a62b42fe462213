"""Prometheus metrics on the gateway's own registry (never the process-global one)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# Buckets from 0.5 ms: the gateway's own overhead lives well below the usual 5 ms first bucket.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


# Humans answer in seconds to hours.
_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)


class Metrics:
    def __init__(self) -> None:
        # `_created` series double the scrape size and no dashboard of ours reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.tool_calls = Counter(
            "interlock_tool_calls",
            "Tool calls handled, by outcome (ok, tool_error, input_required, or a gateway error code).",
            ["server", "tool", "outcome"],
            registry=self.registry,
        )
        self.tool_call_duration = Histogram(
            "interlock_tool_call_duration_seconds",
            "Time from receiving a tool call to answering it, guards included.",
            ["server", "tool"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.upstream_up = Gauge(
            "interlock_upstream_up", "1 when the upstream is connected.", ["server"], registry=self.registry
        )
        self.upstream_restarts = Counter(
            "interlock_upstream_restarts",
            "Reconnections (and restarts of stdio processes) per upstream.",
            ["server"],
            registry=self.registry,
        )

        self.pin_changes = Counter(
            "interlock_tool_pin_changes",
            "Tool definitions seen changed upstream since they were pinned.",
            ["server", "tool"],
            registry=self.registry,
        )
        self.call_notes = Counter(
            "interlock_call_notes",
            "Decisions guards took without refusing (invalid_output, result_truncated, reminder, ...).",
            ["server", "tool", "note"],
            registry=self.registry,
        )

        self.circuit_state = Gauge(
            "interlock_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open (tool is empty for a per-server breaker).",
            ["server", "tool"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "interlock_rate_limited",
            "Calls refused with rate_limited, by the guard that refused: rate_limits, concurrency "
            "or loops (a polling interval).",
            ["server", "tool", "guard"],
            registry=self.registry,
        )
        self.guard_refusals = Counter(
            "interlock_guard_refusals",
            "Calls a guard refused, by guard (see docs/architecture.md for the names) and error code.",
            ["server", "tool", "guard", "code"],
            registry=self.registry,
        )
        self.loops_detected = Counter(
            "interlock_loops_detected",
            "Loops detected, by kind (identical_calls, stuck_polling, failing_retries, cycle, budgets).",
            ["kind"],
            registry=self.registry,
        )

        self.approvals_pending = Gauge(
            "interlock_approvals_pending",
            "Approval requests waiting for a human, as the state store holds them (all replicas).",
            registry=self.registry,
        )
        self.approvals = Counter(
            "interlock_approvals",
            "Approval decisions taken by this replica: approved, denied or expired.",
            ["decision"],
            registry=self.registry,
        )
        self.approval_wait = Histogram(
            "interlock_approval_wait_seconds",
            "Time from an approval request to its decision (or expiry).",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        for decision in ("approved", "denied", "expired"):
            self.approvals.labels(decision)

    def render(self) -> bytes:
        return generate_latest(self.registry)
