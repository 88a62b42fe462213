"""What clients may legally send must survive the state codec and the digests built on it."""

from __future__ import annotations

import pytest

from gateway.approvals.records import canonical_digest
from gateway.core.clock import ManualClock
from gateway.guards.loop_history import call_fingerprint, error_fingerprint, result_fingerprint
from gateway.state.base import StateStore
from gateway.state.memory import decode_doc, encode_doc

# JSON may carry a lone surrogate ("\ud800"); Python decodes it into a str that UTF-8 cannot hold.
LONE = "x\ud800y"


def test_a_lone_surrogate_round_trips_through_the_codec() -> None:
    doc = {"a": LONE, "n": [1, 2.5, None], "nested": {"b": "ünï"}}
    assert decode_doc(encode_doc(doc)) == doc


def test_usual_documents_take_the_fast_path_and_round_trip() -> None:
    doc = {"v": 2, "t": [1.5, 2.25], "key": ["echo#0123456789abcdef"], "res": [None]}
    encoded = encode_doc(doc)
    assert encoded == '{"v":2,"t":[1.5,2.25],"key":["echo#0123456789abcdef"],"res":[null]}'
    assert decode_doc(encoded) == doc


def test_digests_of_a_lone_surrogate_do_not_crash() -> None:
    assert call_fingerprint("echo", {"q": LONE}) != call_fingerprint("echo", {"q": "xy"})
    assert result_fingerprint({"content": [{"type": "text", "text": LONE}]})
    assert error_fingerprint("upstream_error", LONE)
    assert canonical_digest({"q": LONE}).startswith("sha256:")


@pytest.mark.anyio
async def test_every_store_keeps_a_lone_surrogate(store: StateStore, clock: ManualClock) -> None:
    def put(_: dict[str, object] | None) -> tuple[dict[str, object], None]:
        return {"args": {"q": LONE}}, None

    await store.update("doc-with-surrogate", put, ttl_s=60)
    assert await store.get("doc-with-surrogate") == {"args": {"q": LONE}}
