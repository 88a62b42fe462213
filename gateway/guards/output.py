"""What a tool gives back: its declared outputSchema, and the size an agent's context can take."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.policy_models import PositiveInt
from gateway.config.units import ExplainView, Key, Rows, Unit
from gateway.core import CallNext, Clock, SystemClock, ToolCall, ToolResult
from gateway.core.errors import InvalidOutput
from gateway.core.policy import Mode
from gateway.guards.schemas import MAX_VIOLATIONS, SchemaCache
from gateway.guards.stage import GuardDeps, Stage
from gateway.guards.validation import shared_schemas
from gateway.guards.violations import violations_from

log = logging.getLogger("interlock.guards.output")

WARN_INTERVAL_S = 60.0
TRUNCATION_HINT = "Ask for less: use filters, pagination or a smaller limit argument if the tool has one."
ERROR_FLOOR_BYTES = 4096
"""An ``isError`` result is never cut below this: the agent needs the error to recover."""
NOTE_RESERVE_BYTES = 400
"""Room kept for the truncation note block."""
_MISSING_STRUCTURED = {
    "pointer": "/structuredContent",
    "keyword": "outputSchema",
    "expected": "structuredContent matching the tool's outputSchema",
}


@dataclass(frozen=True, slots=True)
class OutputSettings:
    mode: Mode = "warn"


@dataclass(frozen=True, slots=True)
class SizeCap:
    max_result_bytes: int | None = None


def _output_rows(settings: OutputSettings, view: ExplainView) -> Rows:
    return [("output_validation", settings.mode)]


def _cap_rows(settings: SizeCap, view: ExplainView) -> Rows:
    cap = settings.max_result_bytes
    return [("max_result_bytes", "no cap" if cap is None else str(cap))]


OUTPUT: Unit[OutputSettings] = Unit(
    name="output_validation",
    default=OutputSettings(),
    keys={
        "output_validation": Key(
            Mode, "structuredContent against the tool's outputSchema: off, warn (log, count) or block."
        )
    },
    build=lambda values: OutputSettings(values["output_validation"]),
    rows=_output_rows,
)
SIZE_CAP: Unit[SizeCap] = Unit(
    name="result_size_cap",
    default=SizeCap(),
    keys={"max_result_bytes": Key(PositiveInt, "Cut results larger than this (serialized JSON, bytes).")},
    rows=_cap_rows,
)


class OutputValidation:
    """Checks ``structuredContent`` against the tool's ``outputSchema`` on the way back.

    Refuses (mode ``block``) with ``invalid_output``, listing every violation with pointers into
    ``/structuredContent``; a missing ``structuredContent`` is a violation when an outputSchema
    exists. Mode ``warn`` passes the result on noted ``invalid_output`` and logs at most once a
    minute per tool version (without the values: results may carry personal data); ``off`` does
    nothing. ``isError`` and ``input_required`` results are not checked: the schema describes
    success. Keys its compiled validators on (server, tool, schema_version) in the ``SchemaCache``
    it shares with ``ArgumentValidation``.

    It stands innermost on the way back (the first to see the upstream's result, before the size
    cap cuts it and before reminders add blocks), so it judges exactly what the upstream sent.
    """

    def __init__(
        self,
        schemas: SchemaCache | None = None,
        clock: Clock | None = None,
        *,
        max_violations: int = MAX_VIOLATIONS,
        warn_interval_s: float = WARN_INTERVAL_S,
    ) -> None:
        self.schemas = schemas if schemas is not None else SchemaCache()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._max_violations = max_violations
        self._warn_interval_s = warn_interval_s
        self._warned: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        result = await call_next(call)
        mode = call.policy.of(OUTPUT).mode
        schema = call.output_schema
        if mode == "off" or schema is None or result.is_error or result.input_required:
            return result
        if "structuredContent" not in result.raw:
            violations = [dict(_MISSING_STRUCTURED)]
        else:
            entry = self.schemas.get("output", call, schema)
            errors = self.schemas.errors(
                entry, result.raw["structuredContent"], self._max_violations, "output", call
            )
            if not errors:
                return result if errors is not None else result.noted("schema_skipped")
            violations = violations_from(errors, self._max_violations, prefix="/structuredContent")
        if mode == "block":
            raise InvalidOutput(
                f"{call.exposed_name} returned output that does not match its outputSchema: "
                f"{len(violations)} violation{'s' if len(violations) != 1 else ''}.",
                details={"violations": violations},
            )
        self._warn(call, violations)
        return result.noted("invalid_output")

    def _warn(self, call: ToolCall, violations: list[dict[str, Any]]) -> None:
        key = (call.server, call.tool, call.schema_version)
        now = self._clock.monotonic()
        last = self._warned.get(key)
        if last is not None and now - last < self._warn_interval_s:
            return
        self._warned[key] = now
        self._warned.move_to_end(key)
        if len(self._warned) > 4096:
            self._warned.popitem(last=False)
        summary = "; ".join(f"{v['pointer']} expected {v['expected']}" for v in violations[:5])
        log.warning(
            "%s/%s returned invalid output (%d): %s", call.server, call.tool, len(violations), summary
        )


class ResultSizeCap:
    """Cuts a result larger than the policy's ``max_result_bytes`` (serialized JSON, UTF-8).

    Never refuses. Keeps whole content blocks while they fit, cuts the first text block that does
    not, drops the rest, drops ``structuredContent`` when it cannot fit on its own, and appends a
    text block whose JSON says ``{"truncated": {"original_bytes", "kept_bytes", "hint", ...}}``;
    the result is noted ``result_truncated``. An ``isError`` result keeps at least
    ``ERROR_FLOOR_BYTES`` (the agent needs the error to recover); an ``input_required`` result is
    never cut (its ``requestState`` is sealed by the upstream). Keys on nothing: one policy value.

    It stands on the way back after output validation (which judges the full output) and before
    reminders (whose blocks must never be cut).
    """

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        result = await call_next(call)
        limit = call.policy.of(SIZE_CAP).max_result_bytes
        if limit is None or result.input_required:
            return result
        if result.is_error:
            limit = max(limit, ERROR_FLOOR_BYTES)
        if _surely_within(result.raw, limit):
            return result
        size = json_size(result.raw)
        if size <= limit:
            return result
        return ToolResult(truncate(result.raw, size, limit), result.notes).noted("result_truncated")


def _build_output(deps: GuardDeps) -> OutputValidation:
    return OutputValidation(shared_schemas(deps), deps.clock)


def _build_cap(deps: GuardDeps) -> ResultSizeCap:
    return ResultSizeCap()


OUTPUT_STAGE = Stage("output_validation", _build_output, OUTPUT)
SIZE_CAP_STAGE = Stage("result_size_cap", _build_cap, SIZE_CAP)


def json_size(value: Any) -> int:
    """Bytes of the compact UTF-8 JSON form, the way the result travels."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text) if text.isascii() else len(text.encode())


def _surely_within(raw: Mapping[str, Any], limit: int) -> bool:
    """A cheap upper bound for plain text results, which skips serializing them on the hot path.

    A character is at most 6 bytes of JSON (a ``\\u00XX`` escape), and ``{"type":"text","text":""}``
    plus a comma is 27.
    """
    content = raw.get("content")
    if "structuredContent" in raw or not isinstance(content, list):
        return False
    bound = json_size({k: v for k, v in raw.items() if k != "content"}) + len(',"content":[]')
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "text" or len(block) != 2:
            return False
        bound += 6 * len(str(block.get("text"))) + 27
    return bound <= limit


def truncate(raw: Mapping[str, Any], size: int, limit: int) -> dict[str, Any]:
    """The result cut to about ``limit`` bytes, with a structured note of what was cut."""
    cut = {k: v for k, v in raw.items() if k not in ("content", "structuredContent")}
    note: dict[str, Any] = {"original_bytes": size}
    if "structuredContent" in raw:
        if json_size(raw["structuredContent"]) + NOTE_RESERVE_BYTES + json_size(cut) > limit:
            note["structured_content_dropped"] = True
        else:
            cut["structuredContent"] = raw["structuredContent"]
    content = raw.get("content")
    blocks: list[Any] = content if isinstance(content, list) else []
    budget = limit - json_size({**cut, "content": []}) - NOTE_RESERVE_BYTES
    kept: list[Any] = []
    for block in blocks:
        cost = json_size(block) + 1
        if cost <= budget:
            kept.append(block)
            budget -= cost
            continue
        if isinstance(block, Mapping) and block.get("type") == "text" and budget > 64:
            kept.append(_cut_text(block, budget - 1))
        break
    if len(kept) < len(blocks):
        note["dropped_blocks"] = len(blocks) - len(kept)
    cut["content"] = kept
    note["kept_bytes"] = json_size(cut)
    note["hint"] = TRUNCATION_HINT
    text = json.dumps({"truncated": note}, separators=(",", ":"))
    cut["content"] = [*kept, {"type": "text", "text": text}]
    return cut


def _cut_text(block: Mapping[str, Any], budget: int) -> dict[str, Any]:
    """The text block shortened so that its JSON form fits ``budget`` bytes."""
    encoded = str(block.get("text", "")).encode()
    room = budget - json_size({**block, "text": ""}) - len("…".encode())
    keep = max(0, room)
    while keep > 0:
        piece = encoded[:keep].decode(errors="ignore")
        over = json_size(piece) - 2 - room  # escapes can make the JSON longer than the bytes
        if over <= 0:
            return {**block, "text": piece + "…"}
        keep -= max(over, 1)
    return {**block, "text": "…"}
