"""The approval gate's settings: when a human must approve a call, who, and how to ask.

Written as an ``approval`` table in ``[defaults]`` or a rule, replaced whole by a later rule's
table (``required = false`` lifts it). The gate itself is ``gateway.approvals.gate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from gateway.config.models import NOT_BOOL_FLOAT, Name, NonEmpty
from gateway.config.policy_models import Cel
from gateway.config.units import ExplainView, Key, PolicyTable, Rows, Unit
from gateway.core.policy import Evaluator

ApprovalMode = Literal["elicit", "hold", "defer"]


@dataclass(frozen=True, slots=True)
class ApprovalRequirement:
    """A human must approve the call before it runs (when ``when`` holds, or always)."""

    rule: str
    """The rule that asked; recorded on the approval and shown to the approver."""
    when: Evaluator | None = None
    when_source: str | None = None
    timeout_s: float = 900.0
    """How long the request may wait for a decision; undecided by then means denied (expired)."""
    approvers: tuple[str, ...] = ()
    """Admin names or groups who may decide; ``client`` is the human at the agent's own client.
    Empty: anyone with the admin token, and the agent's client."""
    mode: ApprovalMode = "elicit"
    """``elicit``: ask in the agent's own client when it can answer, else ``fallback``."""
    fallback: Literal["hold", "defer"] = "defer"
    destructive_only: bool = False
    """Only tools whose trusted annotations say they may destroy (see the policy key)."""
    reason: str | None = None
    redact: tuple[str, ...] = ()
    """Argument keys (substrings, case-insensitive) redacted in the record besides the built-in ones."""

    def client_may_decide(self) -> bool:
        return not self.approvers or "client" in self.approvers


class ApprovalTable(PolicyTable):
    """A human must approve matching calls; replaced whole by a later rule's table."""

    required: bool = True
    """``false`` lifts an approval an earlier rule asked for."""
    when: Cel | None = None
    """A CEL condition (same variables as a rule's ``when``); approval only when it is true."""
    timeout_s: Annotated[float, Field(gt=0, le=2_592_000, allow_inf_nan=False), NOT_BOOL_FLOAT] = 900
    approvers: Annotated[list[Name], Field(json_schema_extra={"uniqueItems": True})] = []
    """Admin names or groups from servers.toml [admin] who may decide; ``client``: the human at the
    agent's own MCP client (by elicitation). Empty: any admin, and the client."""
    mode: ApprovalMode = "elicit"
    """``elicit`` asks inside the agent's client when it declares elicitation, else ``fallback``;
    ``hold`` keeps the call waiting for a decision; ``defer`` answers approval_required at once."""
    fallback: Literal["hold", "defer"] = "defer"
    destructive_only: bool = False
    """Ask only for tools that may destroy (``destructiveHint``, with the MCP spec's defaults for
    absent hints, and not ``readOnlyHint``), and only where the policy trusts annotations
    (``trust_annotations``): an untrusted server's hints decide nothing."""
    reason: NonEmpty | None = None
    """Shown to the approver; default: the rule's name and its ``when``."""
    redact: list[NonEmpty] = []
    """Argument keys (substrings, case-insensitive) to redact in the record, besides the built-in
    password/token/secret/key/authorization/cookie/credential."""


def _requirement(table: ApprovalTable, rule: str | None) -> ApprovalRequirement | None:
    if not table.required:
        return None  # lifts an earlier rule's approval
    return ApprovalRequirement(
        rule=rule or "defaults",
        when=table.when,
        when_source=table.when.source if table.when is not None else None,
        timeout_s=table.timeout_s,
        approvers=tuple(table.approvers),
        mode=table.mode,
        fallback=table.fallback,
        destructive_only=table.destructive_only,
        reason=table.reason,
        redact=tuple(table.redact),
    )


def _rows(approval: ApprovalRequirement | None, view: ExplainView) -> Rows:
    if approval is None:
        return [("approval", "not required")]
    parts = [f"rule={approval.rule}"]
    if approval.when_source:
        parts.append(f"when `{approval.when_source}`")
    if approval.destructive_only:
        parts.append("destructive_only (trusted annotations)")
    parts.append(f"timeout_s={approval.timeout_s:g}")
    parts.append(
        f"mode={approval.mode}" + (f" fallback={approval.fallback}" if approval.mode == "elicit" else "")
    )
    parts.append(
        "approvers=" + (",".join(approval.approvers) if approval.approvers else "any admin or the client")
    )
    if approval.redact:
        parts.append("redact=" + ",".join(approval.redact))
    return [("approval", " ".join(parts))]


APPROVAL: Unit[ApprovalRequirement | None] = Unit(
    name="approval",
    default=None,
    keys={
        "approval": Key(
            ApprovalTable,
            "A human must approve matching calls (replaced whole; required = false lifts it).",
            convert=_requirement,
        )
    },
    build=lambda values: values["approval"],
    rows=_rows,
)
