"""Access control: a tool the policy denies for this client is absent and uncallable.

Refuses with ``forbidden`` when the resolved policy says ``access = "deny"``; keys on the client
(principal), the server and the tool through the policy's rules. Sits first among the guards that
refuse: nothing else (loop counters, validation, approvals) should spend effort on a call that is
not allowed at all. The catalog hides the same tools from this client's ``tools/list``
(``PolicySet.is_listed`` reads the ``access`` key of each rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.config.units import ExplainView, Key, Rows, Setting, Unit
from gateway.core import CallNext, ToolCall, ToolResult
from gateway.core.errors import Forbidden
from gateway.guards.stage import GuardDeps, Stage

AccessMode = Literal["allow", "deny"]


@dataclass(frozen=True, slots=True)
class AccessSettings:
    access: AccessMode = "allow"


def deny_is_sticky(settings: Sequence[Setting]) -> AccessMode:
    """``deny`` from any matching rule wins over every ``allow``; with no rule saying either, the
    ``[defaults]`` value holds."""
    said = {setting.value for setting in settings if setting.rule is not None}
    if "deny" in said:
        return "deny"
    if "allow" in said:
        return "allow"
    value: AccessMode = settings[0].value
    return value


def _rows(settings: AccessSettings, view: ExplainView) -> Rows:
    return [("access", settings.access)]


ACCESS: Unit[AccessSettings] = Unit(
    name="access",
    default=AccessSettings(),
    keys={
        "access": Key(
            AccessMode,
            '"deny": the tool is hidden from and refused to matching clients (deny is sticky).',
            combine=deny_is_sticky,
        )
    },
    rows=_rows,
)


class Access:
    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        if call.policy.of(ACCESS).access == "deny":
            raise Forbidden(
                f"{call.caller.principal} may not call {call.exposed_name}",
                details={"rules": list(call.policy.rules)},
            )
        return await call_next(call)


def _build(deps: GuardDeps) -> Access:
    return Access()


STAGE = Stage("access", _build, ACCESS)
