"""Tool pinning: the defence against a tool whose description or schema changes under the agent.

The first time the gateway sees a tool it records a hash of its definition. When an upstream later
lists a different definition, the tool's policy decides: ``warn`` logs and counts it and keeps
serving; ``block`` hides the tool from every catalog and refuses its calls with ``forbidden`` until
an operator runs ``interlock pins accept server__tool``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.config.units import ExplainView, Key, Rows, Unit
from gateway.core import CallNext, ToolCall, ToolResult
from gateway.core.clock import Clock
from gateway.core.errors import Forbidden
from gateway.core.policy import Mode
from gateway.guards.stage import GuardDeps, Stage
from gateway.state.pins import Pin, PinStore

log = logging.getLogger("interlock.pins")


@dataclass(frozen=True, slots=True)
class PinningSettings:
    mode: Mode = "warn"


def _rows(settings: PinningSettings, view: ExplainView) -> Rows:
    return [("pinning", settings.mode)]


PINNING: Unit[PinningSettings] = Unit(
    name="pinning",
    default=PinningSettings(),
    keys={
        "pinning": Key(
            Mode, "A tool whose definition changed upstream: off, warn (log, count) or block until accepted."
        )
    },
    build=lambda values: PinningSettings(values["pinning"]),
    rows=_rows,
)


@dataclass(frozen=True, slots=True)
class SeenTool:
    server: str
    tool: str
    exposed: str
    digest: str


class PinBook:
    """What is pinned, what changed, and which exposed names are blocked because of it."""

    def __init__(
        self, store: PinStore, clock: Clock, on_change: Callable[[str, str], None] | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_change = on_change
        self.blocked: frozenset[str] = frozenset()
        self._pins: dict[tuple[str, str], Pin] = {}
        self._seen: list[SeenTool] = []
        self._mode_for: Callable[[SeenTool], Mode] = lambda _: "warn"

    async def reconcile(self, seen: Iterable[SeenTool], mode_for: Callable[[SeenTool], Mode]) -> None:
        """Compare what upstreams list now with the pins; record new tools and new changes."""
        self._seen, self._mode_for = list(seen), mode_for
        self._pins = {(p.server, p.tool): p for p in await self.store.all()}
        for tool in self._seen:
            if mode_for(tool) == "off":
                continue
            pin = self._pins.get((tool.server, tool.tool))
            if pin is None:
                pin = Pin(tool.server, tool.tool, tool.digest, "pinned", None, self.clock.wall(), None)
            elif tool.digest not in (pin.digest, pin.pending):
                pin = Pin(
                    tool.server,
                    tool.tool,
                    pin.digest,
                    "changed",
                    tool.digest,
                    pin.first_seen,
                    self.clock.wall(),
                )
                log.warning(
                    "tool %s (%s/%s) changed upstream since it was pinned; policy: %s",
                    tool.exposed,
                    tool.server,
                    tool.tool,
                    mode_for(tool),
                )
                if self.on_change is not None:
                    self.on_change(tool.server, tool.tool)
            elif tool.digest == pin.digest and pin.status == "changed":
                pin = Pin(
                    tool.server, tool.tool, pin.digest, "pinned", None, pin.first_seen, None
                )  # changed back
            else:
                continue
            self._pins[(tool.server, tool.tool)] = pin
            await self.store.put(pin)
        self._recompute()

    async def refresh(self) -> bool:
        """Re-read the store (an operator may have accepted a change); True when blocking changed."""
        before = self.blocked
        self._pins = {(p.server, p.tool): p for p in await self.store.all()}
        self._recompute()
        return self.blocked != before

    def _recompute(self) -> None:
        blocked = set()
        for tool in self._seen:
            pin = self._pins.get((tool.server, tool.tool))
            changed = pin is not None and pin.status == "changed" and tool.digest != pin.digest
            if changed and self._mode_for(tool) == "block":
                blocked.add(tool.exposed)
        self.blocked = frozenset(blocked)


class PinGuard:
    """Refuses calls to tools whose definition changed upstream while their policy says ``block``.

    Keys on the exposed tool name. Sits right after access control: a blocked tool is as good as
    absent, and nothing downstream (validation against a swapped schema, approval of a swapped
    description) should run for it.
    """

    def __init__(self, book: PinBook | None) -> None:
        self.book = book

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        if self.book is not None and call.exposed_name in self.book.blocked:
            raise Forbidden(
                f"{call.exposed_name} changed upstream since it was approved and is blocked",
                hint=(
                    "Do not use this tool until an operator reviews the change "
                    f"(interlock pins accept {call.exposed_name}); use another tool or ask a human."
                ),
                details={"reason": "tool_definition_changed"},
            )
        return await call_next(call)


def _build(deps: GuardDeps) -> PinGuard:
    return PinGuard(deps.pins)


STAGE = Stage("pinning", _build, PINNING)
