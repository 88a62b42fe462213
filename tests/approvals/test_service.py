"""The approval service on every store: memory, SQLite and a real Redis (a random prefix per test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.approvals import (
    REDACTED,
    ApprovalExpired,
    ApprovalService,
    DecisionConflict,
    UnknownApproval,
    canonical_digest,
)
from gateway.core.call import ToolCall
from gateway.core.clock import ManualClock
from gateway.state import SqliteStateStore, StateStore
from tests.calls import tool_call
from tests.state import TEST_LIMIT_S

pytestmark = pytest.mark.anyio

REFUND = {"order": "O-1", "amount": 250, "auth": {"api_key": "sk-123"}}


@pytest.fixture
def service(store: StateStore, clock: ManualClock) -> ApprovalService:
    return ApprovalService(store, clock)


def refund(amount: int = 250, principal: str = "agent") -> ToolCall:
    return tool_call("shop", "refund", {**REFUND, "amount": amount}, principal=principal, session="s9")


async def test_request_get_and_list(service: ApprovalService, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        call = tool_call("shop", "refund", REFUND, session="s9")
        record = await service.request(call, rule="refunds", reason="amount > 100", timeout_s=900)
        assert len(record.id) >= 16 and record.status == "pending"
        assert (record.server, record.tool, record.client, record.session) == (
            "shop",
            "shop__refund",
            "agent",
            "s9",
        )
        assert record.args_digest == canonical_digest(REFUND)
        assert record.args_redacted == {"order": "O-1", "amount": 250, "auth": {"api_key": REDACTED}}
        assert (record.created, record.expires) == (clock.wall(), clock.wall() + 900)
        assert await service.get(record.id) == record
        assert await service.status(record.id) == "pending"

        clock.advance(1)
        other = await service.request(tool_call("shop", "delete"), rule="r", reason="x", timeout_s=60)
        assert [r.id for r in await service.list()] == [other.id, record.id]
        assert [r.id for r in await service.list("pending")] == [other.id, record.id]
        await service.decide(other.id, False, by="ops")
        assert [r.id for r in await service.list("denied")] == [other.id]
        assert [r.id for r in await service.list(status="pending")] == [record.id]
        with pytest.raises(ValueError, match="unknown approval status"):
            await service.list("nope")
        with pytest.raises(UnknownApproval):
            await service.get("missing")


async def test_a_decision_is_taken_exactly_once(service: ApprovalService, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await service.request(tool_call(), rule="r", reason="x", timeout_s=60)
        clock.advance(5)
        approved = await service.decide(record.id, True, by="alice", comment="fine")
        assert (approved.status, approved.decided_by, approved.decided_at, approved.comment) == (
            "approved",
            "alice",
            clock.wall(),
            "fine",
        )
        for approve in (True, False):
            # A readable time, not epoch seconds (ManualClock's wall clock is in November 2023).
            decided = r"already decided: approved by alice at 2023-11-14 22:13:\d\d UTC"
            with pytest.raises(DecisionConflict, match=decided) as info:
                await service.decide(record.id, approve, by="bob")
            assert (info.value.status, info.value.decided_by) == ("approved", "alice")
        assert await service.get(record.id) == approved
        with pytest.raises(UnknownApproval):
            await service.decide("missing", True, by="alice")


async def test_concurrent_approve_and_deny_give_one_decision(service: ApprovalService) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await service.request(tool_call(), rule="r", reason="x", timeout_s=60)
        wins: list[tuple[bool, str]] = []
        conflicts: list[DecisionConflict] = []

        async def decide(n: int) -> None:
            try:
                decided = await service.decide(record.id, n % 2 == 0, by=f"human-{n}")
                wins.append((decided.status == "approved", decided.decided_by or ""))
            except DecisionConflict as exc:
                conflicts.append(exc)

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(decide, n)

        assert len(wins) == 1 and len(conflicts) == 19
        final = await service.get(record.id)
        assert (final.status == "approved", final.decided_by) == wins[0]
        assert all(c.decided_by == final.decided_by for c in conflicts)


async def test_expiry_means_denied(service: ApprovalService, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        call = tool_call()
        record = await service.request(call, rule="r", reason="x", timeout_s=60)
        clock.advance(60)
        assert await service.status(record.id) == "expired"
        assert [r.id for r in await service.list("expired")] == [record.id]
        assert await service.list("pending") == []
        with pytest.raises(ApprovalExpired, match="expired before anyone decided"):
            await service.decide(record.id, True, by="alice")
        stored = await service.store.get(f"approval:{record.id}")
        assert stored is not None and stored["status"] == "expired"  # written down, not just inferred
        with pytest.raises(ApprovalExpired):
            await service.decide(record.id, False, by="bob")
        assert not await service.consume(record.id, call)


async def test_consume_only_the_exact_call_and_only_once(service: ApprovalService) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        call = refund()
        record = await service.request(call, rule="r", reason="x", timeout_s=60)
        assert not await service.consume(record.id, call)  # still pending
        await service.decide(record.id, True, by="alice")
        for other in (
            refund(amount=251),
            refund(principal="someone-else"),
            tool_call("shop", "refund_all", dict(REFUND), principal="agent"),
        ):
            assert not await service.consume(record.id, other)
        assert await service.consume(record.id, refund())  # same args, new object
        assert not await service.consume(record.id, call)
        used = await service.get(record.id)
        assert used.status == "used" and used.used_at is not None
        assert not await service.consume("missing", call)


async def test_denied_is_never_consumed(service: ApprovalService) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        call = tool_call()
        record = await service.request(call, rule="r", reason="x", timeout_s=60)
        await service.decide(record.id, False, by="alice")
        assert not await service.consume(record.id, call)


async def test_concurrent_consume_runs_once(service: ApprovalService) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        call = tool_call()
        record = await service.request(call, rule="r", reason="x", timeout_s=60)
        await service.decide(record.id, True, by="alice")
        results: list[bool] = []

        async def spend() -> None:
            results.append(await service.consume(record.id, call))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(spend)
        assert sorted(results) == [False] * 9 + [True]


async def test_the_deferred_pointer_leads_the_identical_retry_to_its_request(
    service: ApprovalService, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        call = tool_call("shop", "refund", {"amount": 250})
        assert await service.deferred_for(call) is None
        first = await service.request(call, rule="r", reason="x", timeout_s=60)
        await service.remember_deferred(call, first)
        other = tool_call("shop", "refund", {"amount": 9})
        await service.remember_deferred(
            other, await service.request(other, rule="r", reason="x", timeout_s=60)
        )
        found = await service.deferred_for(tool_call("shop", "refund", {"amount": 250}))  # a new object
        assert found is not None and (found.id, found.status) == (first.id, "pending")
        assert await service.deferred_for(tool_call("shop", "refund", {"amount": 251})) is None
        assert await service.deferred_for(tool_call("shop", "refund", {"amount": 250}, principal="b")) is None
        await service.decide(first.id, True, by="alice")
        approved = await service.deferred_for(call)
        assert approved is not None and approved.status == "approved"
        await service.forget_deferred(call, "some-other-id")  # only its own id removes the pointer
        assert await service.deferred_for(call) is not None
        await service.forget_deferred(call, first.id)
        assert await service.deferred_for(call) is None


async def test_request_validates_its_timeout(service: ApprovalService) -> None:
    for bad in (0, -1, 10**9):
        with pytest.raises(ValueError, match="timeout_s"):
            await service.request(tool_call(), rule="r", reason="x", timeout_s=bad)


async def test_a_record_survives_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        path = tmp_path / "approvals.db"
        first = SqliteStateStore(path, clock)
        try:
            record = await ApprovalService(first, clock).request(
                tool_call(), rule="r", reason="x", timeout_s=900
            )
        finally:
            await first.close()

        second = SqliteStateStore(path, clock)
        try:
            service = ApprovalService(second, clock)
            assert await service.get(record.id) == record
            assert [r.id for r in await service.list("pending")] == [record.id]
            decided = await service.decide(record.id, True, by="ops")
            assert decided.status == "approved"
        finally:
            await second.close()


async def test_listing_pending_reads_only_records_that_may_still_be_pending(
    service: ApprovalService, monkeypatch: pytest.MonkeyPatch
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        decided = [
            await service.request(refund(amount=i), rule="r", reason="x", timeout_s=60) for i in (1, 2)
        ]
        waiting = await service.request(refund(amount=3), rule="r", reason="x", timeout_s=60)
        await service.decide(decided[0].id, True, by="alice")
        await service.decide(decided[1].id, False, by="alice")
        assert await service.consume(decided[0].id, refund(amount=1))
        reads: list[str] = []
        get = service.store.get

        async def counting(key: str) -> dict[str, Any] | None:
            reads.append(key)
            return await get(key)

        monkeypatch.setattr(service.store, "get", counting)
        assert [r.id for r in await service.list("pending")] == [waiting.id]
        assert sorted(reads) == sorted(["approvals:index", f"approval:{waiting.id}"])
        assert [r.id for r in await service.list("used")] == [decided[0].id]
        assert {r.id for r in await service.list()} == {waiting.id, *(r.id for r in decided)}


async def test_sweep_writes_each_expiry_once_and_counts_pending(
    store: StateStore, clock: ManualClock
) -> None:
    told: list[str] = []

    class Events:
        def requested(self, record: Any) -> None:
            pass

        def decided(self, record: Any) -> None:
            told.append(f"{record.id}:{record.status}")

    service = ApprovalService(store, clock, events=Events())
    with anyio.fail_after(TEST_LIMIT_S):
        short = await service.request(refund(amount=1), rule="r", reason="x", timeout_s=10)
        await service.request(refund(amount=2), rule="r", reason="x", timeout_s=60)
        assert await service.sweep() == 2
        clock.advance(11)
        assert await service.sweep() == 1
        assert await service.sweep() == 1  # already written down: not expired (or counted) again
        assert told == [f"{short.id}:expired"]
        stored = await store.get(f"approval:{short.id}")
        assert stored is not None and stored["status"] == "expired"


async def test_list_stops_at_its_limit(service: ApprovalService) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        made = [
            await service.request(refund(amount=i), rule="r", reason="x", timeout_s=60) for i in (1, 2, 3)
        ]
        newest = await service.list(limit=2)
        assert len(newest) == 2 and {r.id for r in newest} <= {r.id for r in made}
        assert len(await service.list()) == 3
