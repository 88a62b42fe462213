"""The approval service: create, list, decide (exactly once) and spend approvals in a state store.

Each record is one document, ``approval:{id}``, and every change of its status is one atomic
``StateStore.update``: two humans approving and denying at once, on two replicas behind Redis or
two processes on one SQLite file, give exactly one decision and one clear conflict. A small index
document, ``approvals:index``, lists the ids so ``list()`` works on stores that cannot scan keys.

Time: ``created``/``expires`` are wall-clock epoch seconds from the injected clock. A pending request
past its expiry *is* expired (and so denied) whether or not anyone has written that down yet.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.approvals.records import (
    SECRET_MARKERS,
    ApprovalRecord,
    ApprovalStatus,
    canonical_digest,
    cast_status,
    redact,
)
from gateway.core.call import ToolCall
from gateway.core.clock import Clock
from gateway.state.base import StateStore

log = logging.getLogger("interlock.approvals")

INDEX_KEY = "approvals:index"
RETAIN_S = 7 * 24 * 3600.0
"""How long a record is kept after its expiry, for the UI's history and the audit trail."""
INDEX_MAX = 5_000
"""Ids the index keeps; the oldest go first. Records themselves still expire on their own TTL."""
MAX_TIMEOUT_S = 30 * 24 * 3600.0


def record_key(approval_id: str) -> str:
    return f"approval:{approval_id}"


def call_key(call: ToolCall) -> str:
    """The pointer from one exact call (client, tool, arguments) to its latest deferred request."""
    return f"approvals:call:{call.caller.principal}:{call.exposed_name}:{canonical_digest(call.arguments)}"


class ApprovalEvents(Protocol):
    """Told of what this process did to a record (metrics, webhook); must not raise or block."""

    def requested(self, record: ApprovalRecord) -> None: ...

    def decided(self, record: ApprovalRecord) -> None:
        """A pending request became approved, denied or expired, by this process's hand."""
        ...


class ApprovalError(Exception):
    """Base of the approval service's refusals."""


class UnknownApproval(ApprovalError, LookupError):
    def __init__(self, approval_id: str) -> None:
        super().__init__(f"no approval {approval_id!r} (unknown, or expired more than 7 days ago)")
        self.approval_id = approval_id


class DecisionConflict(ApprovalError):
    """The request was already decided (or has expired): a decision is taken exactly once."""

    def __init__(self, record: ApprovalRecord) -> None:
        self.record = record
        self.status: ApprovalStatus = record.status
        self.decided_by = record.decided_by
        if record.status == "expired":
            detail = "it expired before anyone decided"
        else:
            detail = f"{record.status} by {record.decided_by or 'unknown'}"
            if record.decided_at is not None:
                when = datetime.fromtimestamp(record.decided_at, tz=UTC)
                detail += f" at {when:%Y-%m-%d %H:%M:%S} UTC"
        super().__init__(f"approval {record.id} was already decided: {detail}")


class ApprovalExpired(DecisionConflict):
    """A decision came after the request's expiry; the request is now marked expired."""


# Which stored statuses a record noted in the index with a given status may read as now.
_REACHABLE: dict[str, frozenset[str]] = {
    "pending": frozenset({"pending", "approved", "denied", "expired", "used"}),
    "approved": frozenset({"approved", "used", "expired"}),
    "denied": frozenset({"denied"}),
    "expired": frozenset({"expired"}),
    "used": frozenset({"used"}),
}


def _may_be(entry: list[Any], wanted: ApprovalStatus) -> bool:
    noted = entry[2] if len(entry) > 2 else "pending"  # entries written before statuses were noted
    return wanted in _REACHABLE.get(str(noted), _REACHABLE["pending"])


class ApprovalService:
    def __init__(self, store: StateStore, clock: Clock, events: ApprovalEvents | None = None) -> None:
        self.store = store
        self.clock = clock
        self.events = events

    # -- creating and reading -------------------------------------------------------------------

    async def request(
        self,
        call: ToolCall,
        *,
        rule: str,
        reason: str,
        timeout_s: float,
        approvers: Iterable[str] = (),
        channel: str = "defer",
        redact_keys: Iterable[str] = (),
    ) -> ApprovalRecord:
        """Record a new pending request for ``call``, decidable for ``timeout_s`` seconds.

        ``redact_keys`` adds to the built-in secret markers: the record keeps only the redacted
        arguments and the digest of the real ones."""
        if not (0 < timeout_s <= MAX_TIMEOUT_S):
            raise ValueError(f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}], got {timeout_s!r}")
        now = self.clock.wall()
        record = ApprovalRecord(
            id=_new_id(),
            server=call.server,
            tool=call.exposed_name,
            args_digest=canonical_digest(call.arguments),
            args_redacted=redact(dict(call.arguments), markers=(*SECRET_MARKERS, *redact_keys)),
            approvers=list(approvers),
            channel=channel,
            client=call.caller.principal,
            session=call.caller.session_key,
            rule=rule,
            reason=reason,
            created=now,
            expires=now + timeout_s,
        )
        # The index first: an id whose record never got written is skipped by list() and pruned.
        await self._index_add(record, now)

        def create(doc: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
            if doc is not None:  # 96 random bits: never, but never overwrite a decision either
                return doc, False
            return record.to_json(), True

        if not await self.store.update(record_key(record.id), create, ttl_s=self._ttl(record, now)):
            raise ApprovalError(f"approval id {record.id} already exists")
        self._tell("requested", record)
        return record

    async def get(self, approval_id: str) -> ApprovalRecord:
        """The record as of now (a pending one past expiry reads as expired); ``UnknownApproval``."""
        doc = await self.store.get(record_key(approval_id))
        if doc is None:
            raise UnknownApproval(approval_id)
        return ApprovalRecord.from_json(doc).as_of(self.clock.wall())

    async def status(self, approval_id: str) -> ApprovalStatus:
        return (await self.get(approval_id)).status

    async def list(
        self, status: ApprovalStatus | str | None = None, *, limit: int | None = None
    ) -> list[ApprovalRecord]:
        """Known records, newest first, optionally only those with ``status`` (as of now), and at
        most ``limit`` of them (reading stops there)."""
        wanted = cast_status(status) if status is not None else None
        records: list[ApprovalRecord] = []
        async for _, record in self._scan(wanted):
            if wanted is None or record.status == wanted:
                records.append(record)
                if limit is not None and len(records) >= limit:
                    break
        return records

    async def sweep(self) -> int:
        """Write down the expiry of every request that ran out undecided (each counted once, by
        whichever replica writes it), and return how many are still pending."""
        pending = 0
        async for stored, record in self._scan("pending"):
            if record.status == "pending":
                pending += 1
            elif record.status == "expired" and stored == "pending":
                await self.expire(record.id)
        return pending

    async def _scan(self, wanted: ApprovalStatus | None) -> AsyncIterator[tuple[str, ApprovalRecord]]:
        """(stored status, record as of now) for the indexed records that may have ``wanted``."""
        index = await self.store.get(INDEX_KEY) or {}
        ids: dict[str, list[Any]] = index.get("ids", {})
        now = self.clock.wall()
        for approval_id in sorted(ids, key=lambda i: ids[i][0], reverse=True):
            if wanted is not None and not _may_be(ids[approval_id], wanted):
                continue  # the index knows it reached another final status: no read needed
            doc = await self.store.get(record_key(approval_id))
            if doc is not None:
                record = ApprovalRecord.from_json(doc)
                yield record.status, record.as_of(now)

    # -- deciding and spending -----------------------------------------------------------------

    async def decide(
        self, approval_id: str, approve: bool, *, by: str, comment: str | None = None
    ) -> ApprovalRecord:
        """Approve or deny a pending request, exactly once.

        Raises ``DecisionConflict`` if it was already decided (naming the status and who decided),
        ``ApprovalExpired`` if it expired first (and records that), ``UnknownApproval`` if absent.
        """
        if not by:
            raise ValueError("a decision needs the name of who took it")
        now = self.clock.wall()

        def decide(doc: dict[str, Any] | None) -> tuple[dict[str, Any] | None, tuple[str, Any]]:
            if doc is None:
                return None, ("unknown", None)
            record = ApprovalRecord.from_json(doc)
            if record.status != "pending":
                return doc, ("conflict", record)
            if now >= record.expires:
                expired = record.as_of(now)
                return expired.to_json(), ("expired", expired)
            decided = ApprovalRecord.from_json(
                {
                    **doc,
                    "status": "approved" if approve else "denied",
                    "decided_by": by,
                    "decided_at": now,
                    "comment": comment,
                }
            )
            return decided.to_json(), ("decided", decided)

        outcome, record = await self._update(approval_id, decide, now)
        if outcome == "unknown":
            raise UnknownApproval(approval_id)
        if outcome == "conflict":
            raise ApprovalExpired(record) if record.status == "expired" else DecisionConflict(record)
        if outcome == "expired":
            await self._index_status(record.id, "expired")
            self._tell("decided", record)
            raise ApprovalExpired(record)
        assert isinstance(record, ApprovalRecord)
        await self._index_status(record.id, record.status)
        self._tell("decided", record)
        return record

    async def expire(self, approval_id: str) -> ApprovalRecord:
        """Write down that a pending request expired (no-op if it was decided, or has time left).

        Reads already treat a pending record past its expiry as expired; writing it makes the
        transition happen once, on one replica, so it is counted once."""
        now = self.clock.wall()

        def write(doc: dict[str, Any] | None) -> tuple[dict[str, Any] | None, tuple[str, Any]]:
            if doc is None:
                return None, ("unknown", None)
            record = ApprovalRecord.from_json(doc)
            if record.status == "pending" and now >= record.expires:
                expired = record.as_of(now)
                return expired.to_json(), ("expired", expired)
            return doc, ("unchanged", record)

        outcome, record = await self._update(approval_id, write, now)
        if outcome == "unknown":
            raise UnknownApproval(approval_id)
        if outcome == "expired":
            await self._index_status(record.id, "expired")
            self._tell("decided", record)
        assert isinstance(record, ApprovalRecord)
        return record.as_of(now)

    async def withdraw(self, approval_id: str, *, by: str) -> ApprovalRecord | None:
        """Deny a request its own caller gave up on (a cancelled held call). None if a human
        decided first: their decision stands and is what the record keeps."""
        try:
            return await self.decide(approval_id, False, by=by, comment="withdrawn: the call was cancelled")
        except (DecisionConflict, UnknownApproval):
            return None

    # -- the deferred-call pointer ------------------------------------------------------------

    async def remember_deferred(self, call: ToolCall, record: ApprovalRecord) -> None:
        """Point ``call`` at ``record``, so its identical retry finds the decision."""
        now = self.clock.wall()

        def point(_: dict[str, Any] | None) -> tuple[dict[str, Any], None]:
            return {"id": record.id}, None

        await self.store.update(call_key(call), point, ttl_s=self._ttl(record, now))

    async def deferred_for(self, call: ToolCall) -> ApprovalRecord | None:
        """The latest deferred request for exactly this call, as of now, if any."""
        doc = await self.store.get(call_key(call))
        approval_id = doc.get("id") if doc else None
        if not isinstance(approval_id, str):
            return None
        try:
            record = await self.get(approval_id)
        except UnknownApproval:
            return None
        return record if record.matches(call) else None

    async def forget_deferred(self, call: ToolCall, approval_id: str) -> None:
        """Drop the pointer once its final outcome was reported, so the next retry asks again."""

        def drop(doc: dict[str, Any] | None) -> tuple[dict[str, Any] | None, None]:
            if doc is not None and doc.get("id") == approval_id:
                return None, None
            return doc, None

        await self.store.update(call_key(call), drop, ttl_s=RETAIN_S)

    async def consume(self, approval_id: str, call: ToolCall) -> bool:
        """Spend an approval on ``call``: True once, only if approved, unexpired and for this exact
        call (same exposed tool, argument digest and client). Atomic: approved -> used."""
        now = self.clock.wall()

        def spend(doc: dict[str, Any] | None) -> tuple[dict[str, Any] | None, tuple[str, Any]]:
            if doc is None:
                return None, ("unknown", None)
            record = ApprovalRecord.from_json(doc)
            if not (record.usable_at(now) and record.matches(call)):
                return doc, ("refused", None)
            return {**doc, "status": "used", "used_at": now}, ("used", None)

        outcome, _ = await self._update(approval_id, spend, now)
        if outcome == "used":
            await self._index_status(approval_id, "used")
        return bool(outcome == "used")

    # -- internals ------------------------------------------------------------------------------

    def _tell(self, what: str, record: ApprovalRecord) -> None:
        if self.events is None:
            return
        try:
            getattr(self.events, what)(record)
        except Exception:  # metrics or a webhook queue must never undo a decision
            log.exception("approval event %s for %s failed", what, record.id)

    async def _update(self, approval_id: str, updater: Any, now: float) -> tuple[str, Any]:
        # The TTL is computed from the current record inside a first read; every status change
        # keeps the record until RETAIN_S after its expiry, which the update itself cannot move.
        doc = await self.store.get(record_key(approval_id))
        ttl_s = self._ttl(ApprovalRecord.from_json(doc), now) if doc is not None else 60.0
        result: tuple[str, Any] = await self.store.update(record_key(approval_id), updater, ttl_s=ttl_s)
        return result

    async def _index_status(self, approval_id: str, status: ApprovalStatus) -> None:
        # Advisory: the record is the truth (and is re-read by list()); a crash between the two
        # writes leaves an index entry saying "pending", which only costs list() one more read.
        def note(doc: dict[str, Any] | None) -> tuple[dict[str, Any] | None, None]:
            ids = (doc or {}).get("ids")
            if not isinstance(ids, dict) or approval_id not in ids:
                return doc, None
            entry = [*list(ids[approval_id])[:2], status]
            return {**(doc or {}), "ids": {**ids, approval_id: entry}}, None

        await self.store.update(INDEX_KEY, note, ttl_s=MAX_TIMEOUT_S + RETAIN_S)

    @staticmethod
    def _ttl(record: ApprovalRecord, now: float) -> float:
        return max(60.0, record.expires - now + RETAIN_S)

    async def _index_add(self, record: ApprovalRecord, now: float) -> None:
        def add(doc: dict[str, Any] | None) -> tuple[dict[str, Any], None]:
            ids: dict[str, list[Any]] = {
                i: v for i, v in (doc or {}).get("ids", {}).items() if v[1] + RETAIN_S > now
            }
            ids[record.id] = [record.created, record.expires, "pending"]
            if len(ids) > INDEX_MAX:
                keep = sorted(ids, key=lambda i: ids[i][0], reverse=True)[:INDEX_MAX]
                ids = {i: ids[i] for i in keep}
            return {"ids": ids}, None

        # Every add refreshes the index for as long as any record it may list can live.
        await self.store.update(INDEX_KEY, add, ttl_s=MAX_TIMEOUT_S + RETAIN_S)


def _new_id() -> str:
    # 96 random bits, URL-safe; never a leading "-", which shells and option parsers take for a flag.
    while (candidate := secrets.token_urlsafe(12)).startswith("-"):
        pass
    return candidate
