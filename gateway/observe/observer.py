"""The observer around the whole chain: one place that records what every call became.

Guards report their decision through the call's outcome (a result or a typed error naming the
guard that raised it), so metrics never need code inside each guard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mcp.shared.exceptions import MCPError

from gateway.core import CallNext, ToolCall, ToolResult
from gateway.core.errors import GatewayError
from gateway.observe.metrics import Metrics
from gateway.observe.recent import RecentCall, RecentCalls

log = logging.getLogger("interlock.calls")


def observer(metrics: Metrics, recent: RecentCalls | None = None) -> Callable[[CallNext], CallNext]:
    """Wraps a chain (``gateway.pipeline.build_pipeline``'s ``observe``)."""
    return lambda chain: observed(chain, metrics, recent)


def observed(chain: CallNext, metrics: Metrics, recent: RecentCalls | None = None) -> CallNext:
    calls = metrics.tool_calls
    duration = metrics.tool_call_duration
    notes = metrics.call_notes
    refusals = metrics.guard_refusals
    rate_limited = metrics.rate_limited

    async def run(call: ToolCall) -> ToolResult:
        started = time.perf_counter()
        started_at = time.time()
        outcome = "internal_error"
        try:
            result = await chain(call)
            outcome = "input_required" if result.input_required else "tool_error" if result.is_error else "ok"
            for note in result.notes:
                notes.labels(call.server, call.tool, note).inc()
            return result
        except GatewayError as exc:
            outcome = exc.code
            guard = exc.refused_by
            if guard is not None:
                refusals.labels(call.server, call.tool, guard, exc.code).inc()
                if exc.code == "rate_limited":
                    rate_limited.labels(call.server, call.exposed_name, guard).inc()
                log.debug("[%s] %s refused by %s: %s", call.request_id, call.exposed_name, guard, exc.code)
            raise
        except MCPError:
            outcome = "protocol_error"  # an upstream's JSON-RPC error, forwarded as sent
            raise
        finally:
            took = time.perf_counter() - started
            calls.labels(call.server, call.tool, outcome).inc()
            duration.labels(call.server, call.tool).observe(took)
            if recent is not None:
                recent.add(
                    RecentCall(
                        at=started_at,
                        server=call.server,
                        tool=call.exposed_name,
                        client=call.caller.principal,
                        outcome=outcome,
                        duration_ms=took * 1000,
                        request_id=call.request_id,
                    )
                )

    return run
