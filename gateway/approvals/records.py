"""The approval record: one human decision about one exact tool call, as kept in the state store.

A record names the call it is about by the exposed tool name, the requesting client and a digest of
the canonical JSON of the arguments, so an approval can never be spent on a different call. The
arguments themselves are kept only with secret-looking values redacted: a record is shown to humans
(web UI, CLI, webhook), and it outlives the call by days.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from gateway.core.call import ToolCall

ApprovalStatus = Literal["pending", "approved", "denied", "expired", "used"]
STATUSES: tuple[ApprovalStatus, ...] = ("pending", "approved", "denied", "expired", "used")
FINAL: frozenset[ApprovalStatus] = frozenset({"denied", "expired", "used"})

REDACTED = "<redacted>"
SECRET_MARKERS: tuple[str, ...] = (
    "password",
    "token",
    "secret",
    "key",
    "authorization",
    "cookie",
    "credential",
)
"""A key containing any of these (case-insensitive) has its value redacted, however deep it sits."""


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept; what digests are computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_digest(arguments: Mapping[str, Any] | None) -> str:
    """``sha256:<hex>`` of the canonical JSON of a call's arguments (``{}`` when there are none)."""
    # surrogatepass: a lone surrogate ("\ud800") is valid JSON input and must digest, not crash.
    body = canonical_json(dict(arguments or {})).encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _secret(key: str, markers: Iterable[str]) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in markers)


def redact(value: Any, *, markers: Iterable[str] = SECRET_MARKERS) -> Any:
    """A copy of ``value`` with the value of every secret-looking key replaced by ``<redacted>``.

    Recurses into objects and arrays; a whole subtree under a secret key is replaced, not walked.
    """
    markers = tuple(m.lower() for m in markers)
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if _secret(str(k), markers) else redact(v, markers=markers)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item, markers=markers) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    id: str
    """Unguessable (``secrets.token_urlsafe``): knowing it is not the right to decide, but it must
    not be enumerable either."""
    server: str
    tool: str
    """The exposed (namespaced) name the agent called."""
    args_digest: str
    """``canonical_digest`` of the arguments: what an approval is bound to."""
    client: str
    """The requesting principal."""
    session: str
    rule: str
    """The policy rule that asked for approval."""
    reason: str
    created: float
    """Wall-clock epoch seconds."""
    expires: float
    """Wall-clock epoch seconds; a request still pending then is expired, which means denied."""
    args_redacted: dict[str, Any] = field(default_factory=dict)
    approvers: list[str] = field(default_factory=list)
    """Admin names or groups who may decide out of band; empty: any admin. ``client`` in the
    list (or an empty list) also lets the human at the agent's own client decide."""
    channel: str = "defer"
    """How the request reached a human: ``elicit`` (the agent's client), ``hold`` or ``defer``."""
    status: ApprovalStatus = "pending"
    decided_by: str | None = None
    decided_at: float | None = None
    comment: str | None = None
    used_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ApprovalRecord:
        known = {name: doc[name] for name in cls.__dataclass_fields__ if name in doc}
        if known.get("status") not in STATUSES:
            raise ValueError(f"approval record {doc.get('id')!r}: unknown status {doc.get('status')!r}")
        return cls(**known)

    def status_at(self, now: float) -> ApprovalStatus:
        """The status as of ``now``: a pending request past its expiry is expired (denied)."""
        if self.status == "pending" and now >= self.expires:
            return "expired"
        return self.status

    def as_of(self, now: float) -> ApprovalRecord:
        """This record with ``status_at(now)`` as its status (nothing is written)."""
        status = self.status_at(now)
        return self if status == self.status else replace(self, status=status)

    def matches(self, call: ToolCall) -> bool:
        """Whether ``call`` is the exact call this record is about: tool, arguments and client."""
        return (
            call.exposed_name == self.tool
            and call.server == self.server
            and call.caller.principal == self.client
            and canonical_digest(call.arguments) == self.args_digest
        )

    def usable_at(self, now: float) -> bool:
        """Approved, not yet used, and not past its expiry."""
        return self.status == "approved" and now < self.expires

    @property
    def final(self) -> bool:
        return self.status in FINAL


def cast_status(value: str) -> ApprovalStatus:
    if value not in STATUSES:
        raise ValueError(f"unknown approval status {value!r}; expected one of {', '.join(STATUSES)}")
    return value
