"""Event sinks: what guards, upstreams and the approval service report, turned into metrics and logs.

Each is a small adapter over ``Metrics`` so that the producers (in layers below) never import the
observation layer, and ``Gateway`` keeps only the lifecycle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.approvals import ApprovalRecord
from gateway.approvals.webhook import WebhookNotifier
from gateway.core.clock import Clock
from gateway.guards.breaker import STATE_GAUGE
from gateway.observe.metrics import Metrics

log = logging.getLogger("interlock")


class GuardEventSink:
    """``GuardEvents``: breaker states (kept for the admin view too) and loop detections."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.circuit_states: dict[tuple[str, str], str] = {}

    def circuit_state(self, server: str, tool: str, state: str) -> None:
        self.metrics.circuit_state.labels(server, tool).set(STATE_GAUGE[state])
        self.circuit_states[(server, tool)] = state

    def loop_detected(self, kind: str) -> None:
        self.metrics.loops_detected.labels(kind).inc()


class UpstreamEventSink:
    """``UpstreamEvents``: health and restarts as metrics; health, list and resource changes handed on."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        health: Callable[[str, bool], None],
        lists_changed: Callable[[str], None],
        resource_updated: Callable[[str, str], None],
    ) -> None:
        self.metrics = metrics
        self._health = health
        self._lists_changed = lists_changed
        self._resource_updated = resource_updated

    def on_health(self, server: str, up: bool) -> None:
        self.metrics.upstream_up.labels(server).set(1 if up else 0)
        self._health(server, up)

    def on_restart(self, server: str) -> None:
        self.metrics.upstream_restarts.labels(server).inc()

    def on_lists_changed(self, server: str) -> None:
        self._lists_changed(server)

    def on_resource_updated(self, server: str, uri: str) -> None:
        self._resource_updated(server, uri)


class ApprovalEventSink:
    """``ApprovalEvents``: the pending gauge, decisions and waits, the webhook, and a log line each."""

    def __init__(self, metrics: Metrics, clock: Clock, webhook: WebhookNotifier | None = None) -> None:
        self.metrics = metrics
        self.clock = clock
        self.webhook = webhook

    def requested(self, record: ApprovalRecord) -> None:
        self.metrics.approvals_pending.inc()  # re-read from the store on the next sweep
        if self.webhook is not None:
            self.webhook.submit(record)
        log.info(
            "approval %s requested: %s for %s (rule %s, %s)",
            record.id,
            record.tool,
            record.client,
            record.rule,
            record.channel,
        )

    def decided(self, record: ApprovalRecord) -> None:
        self.metrics.approvals.labels(record.status).inc()
        self.metrics.approval_wait.observe(
            max(0.0, (record.decided_at or self.clock.wall()) - record.created)
        )
        self.metrics.approvals_pending.dec()
        log.info("approval %s %s by %s", record.id, record.status, record.decided_by or "nobody (expired)")
