"""Rewrite: every failure leaves the chain as one typed error with the operator's hint."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import anyio
from mcp.shared.exceptions import MCPError

from gateway.config.models import NonEmpty
from gateway.config.policy_models import code_type
from gateway.config.units import ExplainView, Key, Rows, Unit, json_text, merged
from gateway.core import CallNext, ToolCall, ToolResult
from gateway.core.errors import ALL_ERRORS, GatewayError, InternalError
from gateway.guards.stage import GuardDeps, Stage

log = logging.getLogger("interlock.guards.rewrite")

HintCode = code_type(tuple(error.code for error in ALL_ERRORS))
"""Codes a hint can be given for: the gateway's closed set."""


@dataclass(frozen=True, slots=True)
class Hints:
    hints: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Hint overrides by error code."""


def _rows(settings: Hints, view: ExplainView) -> Rows:
    return [(f"hints.{code}", json_text(text)) for code, text in settings.hints.items()]


HINTS: Unit[Hints] = Unit(
    name="rewrite",
    default=Hints(),
    keys={
        "hints": Key(
            dict[HintCode, NonEmpty],  # type: ignore[valid-type]
            "The hint an agent reads, by error code (merged code by code across rules).",
            combine=merged,
        )
    },
    build=lambda values: Hints(MappingProxyType(values["hints"])),
    rows=_rows,
)


class Rewrite:
    """Gives every error leaving the chain its final form.

    Changes: a ``GatewayError`` gets the policy's hint override for its code (policy key
    ``hints``); its code, message, ``retry_after_s`` and details are kept. Any other
    exception is a bug: it is logged with its traceback and becomes ``internal_error`` whose message
    and ``details.correlation_id`` carry ``call.request_id`` and nothing of the traceback.
    Passes through untouched: results (including unclassified ``isError`` results, which are the
    tool's own words), cancellation, and ``MCPError`` (an upstream's protocol-plane error, forwarded
    to the client as sent).

    Keys on: the error's ``code`` and the call's resolved policy.

    Position: outermost, so it sees every outcome, refusals of every guard included, and the hint an
    agent reads is always the operator's last word.
    """

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        try:
            return await call_next(call)
        except anyio.get_cancelled_exc_class():
            raise
        except GatewayError as exc:
            self._apply_hint(call, exc)
            raise
        except MCPError:
            raise
        except Exception as exc:
            single = _only_leaf(exc)
            if isinstance(single, GatewayError):
                self._apply_hint(call, single)
                raise single  # noqa: B904 - the group was only a wrapper; its leaf keeps its own cause
            if isinstance(single, MCPError):
                raise single  # noqa: B904
            log.error("internal error [%s] in %s.%s", call.request_id, call.server, call.tool, exc_info=exc)
            err = InternalError(
                f"internal gateway error (correlation id {call.request_id})",
                details={"correlation_id": call.request_id},
            )
            self._apply_hint(call, err)
            raise err from exc  # the cause stays for logs; the agent sees only the message

    @staticmethod
    def _apply_hint(call: ToolCall, err: GatewayError) -> None:
        override = call.policy.of(HINTS).hints.get(err.code)
        if override is not None:
            err.hint = override


def _only_leaf(exc: BaseException) -> BaseException | None:
    """The one exception inside (possibly nested) exception groups, if there is exactly one.

    A guard or transport running work in a task group reports a single failure as a group; that
    failure keeps its type rather than turning into an internal error.
    """
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def _build(deps: GuardDeps) -> Rewrite:
    return Rewrite()


STAGE = Stage("rewrite", _build, HINTS)
