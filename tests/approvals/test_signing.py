"""The signed requestState: a valid round trip, and every way a state is refused, on every store."""

from __future__ import annotations

import base64
import json

import anyio
import pytest

from gateway.approvals import ExpiredState, ReplayedState, StateSigner, TamperedState, canonical_digest
from gateway.core.clock import ManualClock
from gateway.state import StateStore
from tests.state import TEST_LIMIT_S

pytestmark = pytest.mark.anyio

SECRET = b"s" * 32
DIGEST = canonical_digest({"amount": 250})
PAYLOAD = {"approval_id": "abc", "tool": "shop__refund"}


@pytest.fixture
def signer(store: StateStore, clock: ManualClock) -> StateSigner:
    return StateSigner(SECRET, clock, store)


def seal(signer: StateSigner, ttl_s: float = 300) -> str:
    return signer.seal(PAYLOAD, client="agent", call_digest=DIGEST, ttl_s=ttl_s)


async def test_round_trip(signer: StateSigner) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        token = seal(signer)
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
        assert await signer.open(token, client="agent", call_digest=DIGEST) == PAYLOAD
        assert seal(signer) != token  # a fresh nonce every time


async def test_a_replayed_state_is_refused(
    signer: StateSigner, store: StateStore, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        token = seal(signer)
        await signer.open(token, client="agent", call_digest=DIGEST)
        with pytest.raises(ReplayedState):
            await signer.open(token, client="agent", call_digest=DIGEST)
        # Another replica (another signer on the same store) refuses it too.
        with pytest.raises(ReplayedState):
            await StateSigner(SECRET, clock, store).open(token, client="agent", call_digest=DIGEST)


async def test_concurrent_opens_succeed_once(signer: StateSigner) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        token = seal(signer)
        outcomes: list[str] = []

        async def one() -> None:
            try:
                await signer.open(token, client="agent", call_digest=DIGEST)
                outcomes.append("ok")
            except ReplayedState:
                outcomes.append("replayed")

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
        assert sorted(outcomes) == ["ok"] + ["replayed"] * 9


def flip(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


@pytest.mark.parametrize("where", ["body_start", "body_middle", "mac_start", "mac_end"])
async def test_a_flipped_byte_is_refused(signer: StateSigner, where: str) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        token = seal(signer)
        dot = token.index(".")
        index = {"body_start": 0, "body_middle": dot // 2, "mac_start": dot + 1, "mac_end": len(token) - 2}
        with pytest.raises(TamperedState):
            await signer.open(flip(token, index[where]), client="agent", call_digest=DIGEST)
        # A refused forgery spends nothing: the genuine token still opens.
        assert await signer.open(token, client="agent", call_digest=DIGEST) == PAYLOAD


async def test_a_rewritten_body_is_refused(signer: StateSigner) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        token = seal(signer)
        body_part, mac_part = token.split(".")
        body = json.loads(base64.urlsafe_b64decode(body_part + "=" * (-len(body_part) % 4)))
        body["e"] += 10**6  # extend its life
        forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
        with pytest.raises(TamperedState, match="signature"):
            await signer.open(f"{forged}.{mac_part}", client="agent", call_digest=DIGEST)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "a" * 70_000 + ".b", "YQ.YQ=="])
async def test_garbage_is_refused(signer: StateSigner, token: str) -> None:
    with pytest.raises(TamperedState):
        await signer.open(token, client="agent", call_digest=DIGEST)


async def test_another_key_is_refused(signer: StateSigner, store: StateStore, clock: ManualClock) -> None:
    token = StateSigner(b"x" * 32, clock, store).seal(PAYLOAD, client="agent", call_digest=DIGEST, ttl_s=60)
    with pytest.raises(TamperedState, match="signature"):
        await signer.open(token, client="agent", call_digest=DIGEST)


async def test_an_expired_state_is_refused(signer: StateSigner, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        token = seal(signer, ttl_s=60)
        clock.advance(60)
        with pytest.raises(ExpiredState):
            await signer.open(token, client="agent", call_digest=DIGEST)


async def test_wrong_client_or_call_is_refused(signer: StateSigner) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        token = seal(signer)
        with pytest.raises(TamperedState, match="another client"):
            await signer.open(token, client="mallory", call_digest=DIGEST)
        with pytest.raises(TamperedState, match="different call"):
            await signer.open(token, client="agent", call_digest=canonical_digest({"amount": 251}))
        assert await signer.open(token, client="agent", call_digest=DIGEST) == PAYLOAD


def test_a_short_secret_is_rejected(clock: ManualClock) -> None:
    from gateway.state import MemoryStateStore

    with pytest.raises(ValueError, match="at least 32 bytes"):
        StateSigner(b"short", clock, MemoryStateStore(clock))
