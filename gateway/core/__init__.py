"""The shared vocabulary of the gateway. Imports nothing else of the project."""

from gateway.core.backchannel import BackChannel, current_backchannel
from gateway.core.call import Caller, ToolCall, ToolResult
from gateway.core.chain import CallNext, Guard, build_chain
from gateway.core.clock import Clock, ManualClock, SystemClock
from gateway.core.errors import GatewayError
from gateway.core.policy import DEFAULT_POLICY, ResolvedPolicy

__all__ = [
    "DEFAULT_POLICY",
    "BackChannel",
    "CallNext",
    "Caller",
    "Clock",
    "GatewayError",
    "Guard",
    "ManualClock",
    "ResolvedPolicy",
    "SystemClock",
    "ToolCall",
    "ToolResult",
    "build_chain",
    "current_backchannel",
]
