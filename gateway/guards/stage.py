"""A stage of the call pipeline: a guard's name, how it is built, and the settings it reads.

Each guard module exports one ``STAGE``; ``gateway.pipeline`` lists them in their fixed order, and
everything that depends on the set of guards (the policy files' keys, their merge, ``policy
explain``, the JSON Schema, the ``guard`` label) is derived from that one list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.config.units import Unit
from gateway.core import Caller, Guard, ToolCall, ToolResult
from gateway.core.clock import Clock
from gateway.core.policy import ResolvedPolicy
from gateway.state.base import StateStore

if TYPE_CHECKING:  # both modules build their guards from these deps
    from gateway.guards.pinning import PinBook
    from gateway.guards.retry import RetryBudget


class LookupRunner(Protocol):
    """Runs another exposed tool through the gateway's own pipeline, as ``caller``: a reference
    check's lookup, or a breaker's fallback tool."""

    async def __call__(
        self, exposed_name: str, arguments: Mapping[str, Any], caller: Caller
    ) -> ToolResult: ...


class GuardEvents(Protocol):
    """What guards tell the rest of the gateway while they work (the app turns it into metrics)."""

    def circuit_state(self, server: str, tool: str, state: str) -> None:
        """A breaker this replica saw in ``state`` (closed, half_open, open)."""

    def loop_detected(self, kind: str) -> None:
        """Loop detection found evidence of ``kind``, whether it warned, blocked or asked."""


class NoEvents:
    def circuit_state(self, server: str, tool: str, state: str) -> None:
        pass

    def loop_detected(self, kind: str) -> None:
        pass


Resolver = Callable[[ToolCall], ResolvedPolicy]
"""Resolves the policy of a ``ToolCall`` (``PolicySet.resolve_call`` of the policy in force)."""


@dataclass
class GuardDeps:
    """Everything a guard may be built from; each stage takes what it needs."""

    resolver: Resolver
    clock: Clock
    store: StateStore
    """Counters and windows: rate limits, loop histories, breakers, concurrency slots."""
    lookup: LookupRunner
    """Runs another tool call through the whole pipeline (reference checks, breaker fallbacks)."""
    pins: PinBook | None = None
    """The tool pins; None: pinning refuses nothing."""
    events: GuardEvents = field(default_factory=NoEvents)
    budget: RetryBudget | None = None
    """The retry guard's budget per upstream; None: one in memory."""
    approval: Guard | None = None
    """The human approval gate, built above this layer (``gateway.approvals``)."""
    shared: dict[str, Any] = field(default_factory=dict)
    """Objects two guards share (one compiled-schema cache for arguments and outputs)."""


Build = Callable[[GuardDeps], Guard | None]


@dataclass(frozen=True)
class Stage:
    """One place in the pipeline. ``build`` None: settings only, read by guards elsewhere."""

    name: str
    build: Build | None = None
    unit: Unit[Any] | None = None

    def __post_init__(self) -> None:
        if self.unit is not None and self.unit.name != self.name:
            raise ValueError(f"stage {self.name!r} carries the settings of {self.unit.name!r}")
