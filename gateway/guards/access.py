"""Access control: a tool the policy denies for this client is absent and uncallable.

Refuses with ``forbidden`` when the resolved policy says ``access = "deny"``; keys on the client
(principal), the server and the tool through the policy's rules. Sits first among the guards that
refuse: nothing else (loop counters, validation, approvals) should spend effort on a call that is
not allowed at all. The catalog hides the same tools from this client's ``tools/list``.
"""

from __future__ import annotations

from gateway.core import CallNext, ToolCall, ToolResult
from gateway.core.errors import Forbidden


class Access:
    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        if call.policy.access == "deny":
            raise Forbidden(
                f"{call.caller.principal} may not call {call.exposed_name}",
                details={"rules": list(call.policy.rules)},
            )
        return await call_next(call)
