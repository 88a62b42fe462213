"""What the policy says about a tool itself: whether calling it twice is safe, and whether its
server's annotations are believed. Not a guard: retry, timeout, the breaker's fallback and the
approval gate read these settings, so they belong to none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.units import ExplainView, Key, Rows, Unit, toml_text
from gateway.guards.stage import Stage


@dataclass(frozen=True, slots=True)
class Traits:
    idempotent: bool | None = None
    """Set by policy; ``None`` defers to the tool's annotations when they are trusted."""
    trust_annotations: bool = False
    """Believe the server's ``readOnlyHint`` / ``idempotentHint`` / ``destructiveHint``."""

    def is_idempotent(self, annotations: Mapping[str, Any]) -> bool:
        """Whether retrying is safe: policy says so, or trusted annotations do."""
        if self.idempotent is not None:
            return self.idempotent
        if not self.trust_annotations:
            return False
        return bool(annotations.get("readOnlyHint") or annotations.get("idempotentHint"))

    def is_read_only(self, annotations: Mapping[str, Any]) -> bool:
        """Whether a stored earlier result may stand in for a new call (policy or trusted hint)."""
        if self.idempotent is True:
            return True
        return self.trust_annotations and annotations.get("readOnlyHint") is True


def _rows(traits: Traits, view: ExplainView) -> Rows:
    why = "policy" if traits.idempotent is not None else "trusted annotations"
    if traits.idempotent is None and not traits.trust_annotations:
        why = "annotations not trusted"
    return [
        ("idempotent", f"{toml_text(traits.is_idempotent(view.annotations))} ({why})"),
        ("trust_annotations", toml_text(traits.trust_annotations)),
    ]


TRAITS: Unit[Traits] = Unit(
    name="traits",
    default=Traits(),
    keys={
        "idempotent": Key(
            bool, "Safe to repeat: retries and timeouts treat it so (default: the trusted annotations)."
        ),
        "trust_annotations": Key(
            bool, "Believe this server's readOnlyHint / idempotentHint / destructiveHint annotations."
        ),
    },
    rows=_rows,
)


STAGE = Stage("traits", unit=TRAITS)
