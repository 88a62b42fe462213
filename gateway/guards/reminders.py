"""Reminders: operator-written constraints re-injected next to tool results (instruction drift).

Long sessions bury the system prompt; a constraint repeated where the model is looking, next to
the result it is about to act on, keeps working. Each matching rule's reminder is added as its own
text block, next to results and next to tool-plane errors, on every Nth matching call of a session
(``reminder_every``). Keys on the session and the set of reminders. Sits right inside error
rewriting, so refusals from every later guard carry the reminder too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.models import NonEmpty
from gateway.config.policy_models import PositiveInt
from gateway.config.units import ExplainView, Key, Rows, Unit, appended_once, json_text
from gateway.core import CallNext, ToolCall, ToolResult
from gateway.core.errors import GatewayError
from gateway.guards.stage import GuardDeps, Stage

_MAX_SESSIONS = 50_000  # bounded memory: the oldest sessions' counters are forgotten first


@dataclass(frozen=True, slots=True)
class ReminderSettings:
    texts: tuple[str, ...] = ()
    """Every matching rule's reminder, each once, in rule order."""
    every: int = 1
    """Re-inject on every Nth matching call of a session (1 = every call)."""


def _build_settings(values: Mapping[str, Any]) -> ReminderSettings:
    settings = ReminderSettings()
    texts = values.get("reminder")
    every = values.get("reminder_every")
    return ReminderSettings(
        texts=texts if isinstance(texts, tuple) else settings.texts,
        every=every if isinstance(every, int) else settings.every,
    )


def _rows(settings: ReminderSettings, view: ExplainView) -> Rows:
    rows = [("reminder_every", str(settings.every))]
    return rows + [("reminder", json_text(text)) for text in settings.texts]


REMINDERS: Unit[ReminderSettings] = Unit(
    name="reminders",
    default=ReminderSettings(),
    keys={
        "reminder": Key(
            NonEmpty,
            "A constraint re-injected next to matching results (every matching rule's, each once).",
            combine=appended_once,
        ),
        "reminder_every": Key(PositiveInt, "Re-inject on every Nth matching call of a session."),
    },
    build=_build_settings,
    rows=_rows,
)


class Reminders:
    def __init__(self) -> None:
        self._counts: OrderedDict[tuple[str, tuple[str, ...]], int] = OrderedDict()

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        settings = call.policy.of(REMINDERS)
        reminders = settings.texts
        if not reminders:
            return await call_next(call)
        due = self._due(call.caller.session_key, reminders, max(1, settings.every))
        try:
            result = await call_next(call)
        except GatewayError as err:
            if due and err.plane == "tool":
                err.extra_content.extend(_blocks(reminders))
            raise
        if not due or result.input_required:
            return result
        raw = dict(result.raw)
        raw["content"] = [*result.content, *_blocks(reminders)]
        return ToolResult(raw, result.notes).noted("reminder")

    def _due(self, session: str, reminders: tuple[str, ...], every: int) -> bool:
        key = (session, reminders)
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        if len(self._counts) > _MAX_SESSIONS:
            self._counts.popitem(last=False)
        return (count - 1) % every == 0


def _blocks(reminders: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"type": "text", "text": f"Reminder: {text}"} for text in reminders]


def _build(deps: GuardDeps) -> Reminders:
    return Reminders()


STAGE = Stage("reminders", _build, REMINDERS)
