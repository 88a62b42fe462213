"""The webhook notifier against a real HTTP receiver on a local port, with backoff on a manual clock."""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydantic import SecretStr

from gateway.approvals import ApprovalRecord, ApprovalService
from gateway.approvals.webhook import WebhookNotifier, sign, verify_signature
from gateway.config import WebhookSettings
from gateway.core.clock import ManualClock
from gateway.state import MemoryStateStore
from tests.calls import tool_call
from tests.state import TEST_LIMIT_S
from tests.support import free_port

pytestmark = pytest.mark.anyio

SECRET = "whsec-0123456789abcdef"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every POST; answers the next planned reply (a status, ``(status, retry_after)`` or
    ``"drop"`` to close the connection without an answer), then 200 once the plan runs out."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    plan: list[int | tuple[int, str] | str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.seen) >= count, timeout=TEST_LIMIT_S)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recv = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with recv.changed:
                recv.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                reply = recv.plan.pop(0) if recv.plan else 200
                recv.changed.notify_all()
            if reply == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, retry_after = reply if isinstance(reply, tuple) else (reply, None)
            assert isinstance(status, int)
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    recv.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/approvals"
    try:
        yield recv
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def settings(url: str, **changes: Any) -> WebhookSettings:
    values: dict[str, Any] = {"url": url, "secret": SecretStr(SECRET), "base_delay_s": 1, "max_delay_s": 30}
    return WebhookSettings(**{**values, **changes})


def decide_url(approval_id: str) -> str:
    return f"https://gw.example/admin/approvals/{approval_id}"


def record(**changes: Any) -> ApprovalRecord:
    values: dict[str, Any] = {
        "id": "AbCdEfGhIjKlMnOp",
        "server": "shop",
        "tool": "shop__refund",
        "args_digest": "sha256:" + "0" * 64,
        "client": "agent",
        "session": "s9",
        "rule": "big-refunds",
        "reason": "refunds over 100 need a human",
        "created": 1_700_000_000.0,
        "expires": 1_700_000_900.0,
        "args_redacted": {"order": "O-1", "amount": 250, "api_key": "<redacted>"},
        "approvers": ["ops"],
    }
    return ApprovalRecord(**{**values, **changes})


def notifier(url: str, clock: ManualClock, **changes: Any) -> WebhookNotifier:
    return WebhookNotifier(settings(url, **changes), clock, decide_url=decide_url)


async def test_the_body_is_the_documented_payload_and_verifies(
    receiver: Receiver, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        hook = notifier(receiver.url, clock)
        rec = record()
        assert await hook.deliver(rec)
        await hook.aclose()
    (seen,) = receiver.seen
    sent_at = int(clock.wall())
    assert seen.path == "/hooks/approvals"
    assert seen.json() == {
        "type": "approval.requested",
        "approval": rec.to_json(),
        "decide_url": decide_url(rec.id),
        "sent_at": sent_at,
    }
    headers = seen.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "interlock"
    assert uuid.UUID(headers["x-interlock-delivery"])
    assert headers["x-interlock-timestamp"] == str(sent_at)
    ts, sig = headers["x-interlock-timestamp"], headers["x-interlock-signature"]
    assert sig.startswith("sha256=")
    assert verify_signature(SECRET, ts, seen.body, sig, now=clock.wall())
    assert not verify_signature(SECRET, ts, seen.body.replace(b"250", b"950"), sig, now=clock.wall())
    assert not verify_signature(SECRET, str(sent_at + 1), seen.body, sig, now=clock.wall())
    assert not verify_signature("another-secret-0123", ts, seen.body, sig, now=clock.wall())
    # An old, correctly signed delivery replayed later is refused for its age alone.
    assert not verify_signature(SECRET, ts, seen.body, sig, now=clock.wall() + 301)
    assert not verify_signature(SECRET, "soon", seen.body, sig, now=clock.wall())
    assert not verify_signature(SECRET, ts, seen.body, "sha256=é", now=clock.wall())
    assert hook.delivered == 1 and hook.failed == 0


async def test_without_a_secret_bodies_go_unsigned(receiver: Receiver, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        hook = notifier(receiver.url, clock, secret=None)
        assert await hook.deliver(record())
        await hook.aclose()
    headers = receiver.seen[0].headers
    assert "x-interlock-signature" not in headers and "x-interlock-timestamp" not in headers
    assert "x-interlock-delivery" in headers


async def test_transient_failures_are_retried_with_one_delivery_id(
    receiver: Receiver, clock: ManualClock
) -> None:
    receiver.plan = [500, (429, "7"), "drop", 503]
    with anyio.fail_after(TEST_LIMIT_S):
        hook = notifier(receiver.url, clock, max_attempts=5)
        assert await hook.deliver(record())
        await hook.aclose()
    assert len(receiver.seen) == 5
    assert len({seen.headers["x-interlock-delivery"] for seen in receiver.seen}) == 1
    # The body is the same on every attempt; each attempt is signed afresh, so a retry after a long
    # backoff still passes the receiver's freshness check.
    assert len({seen.body for seen in receiver.seen}) == 1
    stamps = [int(seen.headers["x-interlock-timestamp"]) for seen in receiver.seen]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0] == receiver.seen[0].json()["sent_at"]
    for seen, stamp in zip(receiver.seen, stamps, strict=True):
        assert seen.headers["x-interlock-signature"] == sign(SECRET, stamp, seen.body)
        assert verify_signature(
            SECRET, str(stamp), seen.body, seen.headers["x-interlock-signature"], now=stamp
        )
    first, after_429, after_drop, after_503 = clock.slept
    assert 1 <= first <= 2
    assert after_429 == 7.0
    assert 1 <= after_drop <= 8
    assert 1 <= after_503 <= 16
    assert hook.delivered == 1 and hook.failed == 0


async def test_retry_after_is_capped_at_max_delay(receiver: Receiver, clock: ManualClock) -> None:
    receiver.plan = [(429, "3600")]
    with anyio.fail_after(TEST_LIMIT_S):
        hook = notifier(receiver.url, clock, max_delay_s=30)
        assert await hook.deliver(record())
        await hook.aclose()
    assert clock.slept == [30.0]


async def test_a_client_error_is_not_retried(receiver: Receiver, clock: ManualClock) -> None:
    receiver.plan = [400]
    with anyio.fail_after(TEST_LIMIT_S):
        hook = notifier(receiver.url, clock)
        assert not await hook.deliver(record())
        await hook.aclose()
    assert len(receiver.seen) == 1
    assert clock.slept == []
    assert hook.failed == 1


async def test_max_attempts_is_respected(receiver: Receiver, clock: ManualClock) -> None:
    receiver.plan = [500] * 10
    with anyio.fail_after(TEST_LIMIT_S):
        hook = notifier(receiver.url, clock, max_attempts=3)
        assert not await hook.deliver(record())
        await hook.aclose()
    assert len(receiver.seen) == 3
    assert len(clock.slept) == 2
    assert hook.failed == 1 and hook.delivered == 0


async def test_an_unreachable_receiver_is_retried_and_logs_no_secrets(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="interlock.approvals.webhook")
    port = free_port()  # bound and released: nothing listens there
    url = f"http://127.0.0.1:{port}/services/T000/B000/hunter2?token=qwerty"
    with anyio.fail_after(TEST_LIMIT_S):
        hook = notifier(url, clock, max_attempts=3)
        assert not await hook.deliver(record())
        await hook.aclose()
    assert len(clock.slept) == 2
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("interlock"))
    assert f"http://127.0.0.1:{port}" in ours
    assert "after 3 attempts" in ours
    for secret in ("hunter2", "qwerty", "T000", SECRET):
        assert secret not in ours


async def test_slack_format_is_a_readable_message(receiver: Receiver, clock: ManualClock) -> None:
    rec = record(reason="amount > 100 & <manual> review")
    with anyio.fail_after(TEST_LIMIT_S):
        hook = notifier(receiver.url, clock, format="slack", secret=None)
        assert await hook.deliver(rec)
        await hook.aclose()
    body = receiver.seen[0].json()
    assert set(body) == {"text", "blocks"}
    assert "shop__refund" in body["text"] and "agent" in body["text"]
    assert decide_url(rec.id) in body["text"]
    # Slack gives &, < and > a meaning; the reason is shown as written.
    assert "amount &gt; 100 &amp; &lt;manual&gt; review" in body["text"]
    blocks = json.dumps(body["blocks"])
    assert '\\"api_key\\": \\"&lt;redacted&gt;\\"' in blocks
    assert "big-refunds" in blocks
    buttons = next(b for b in body["blocks"] if b["type"] == "actions")["elements"]
    assert buttons[0]["url"] == decide_url(rec.id)


async def test_a_full_queue_drops_and_counts(clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    hook = WebhookNotifier(settings("http://127.0.0.1:9/x"), clock, decide_url=decide_url, queue_size=2)
    for n in range(3):
        hook.submit(record(id=f"id-{n}"))
    assert hook.dropped == 1
    assert "queue full" in caplog.text and "id-2" in caplog.text
    await hook.aclose()
    assert hook.dropped == 3  # closing abandons what was still queued, and says so
    hook.submit(record(id="late"))
    assert hook.dropped == 4


class Announce:
    """The service's events hook, as the gateway wires it: each new request goes to the webhook."""

    def __init__(self, hook: WebhookNotifier) -> None:
        self.hook = hook

    def requested(self, record: ApprovalRecord) -> None:
        self.hook.submit(record)

    def decided(self, record: ApprovalRecord) -> None:
        pass


async def test_the_worker_announces_each_new_request_without_raw_arguments(
    receiver: Receiver, clock: ManualClock
) -> None:
    def link(approval_id: str) -> str:
        if approval_id == broken_id:
            raise RuntimeError("no public url")
        return decide_url(approval_id)

    broken_id = ""
    hook = WebhookNotifier(settings(receiver.url), clock, decide_url=link)
    store = MemoryStateStore(clock)
    service = ApprovalService(store, clock, events=Announce(hook))
    args = {"order": "O-1", "amount": 250, "auth": {"api_key": "sk-live-0123456789"}}
    with anyio.fail_after(TEST_LIMIT_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hook.run)
            broken = await service.request(
                tool_call("shop", "refund", args), rule="big-refunds", reason="over 100", timeout_s=900
            )
            broken_id = broken.id
            first = await service.request(
                tool_call("shop", "refund", args), rule="big-refunds", reason="over 100", timeout_s=900
            )
            second = await service.request(
                tool_call("shop", "refund", {**args, "amount": 300}),
                rule="big-refunds",
                reason="over 100",
                timeout_s=900,
            )
            assert await anyio.to_thread.run_sync(receiver.wait_for, 2)
            # The receiver has answered; the answers are still on their way back to the worker.
            while hook.delivered < 2:  # noqa: ASYNC110 (a counter, nothing to wait on)
                await anyio.sleep(0.01)
            # The worker keeps going after a delivery that blew up, and stops on aclose().
            await hook.aclose()
        await store.close()
    announced = {seen.json()["approval"]["id"]: seen for seen in receiver.seen}
    assert set(announced) == {first.id, second.id}
    assert hook.failed == 1 and hook.delivered == 2
    for seen in announced.values():
        assert b"sk-live-0123456789" not in seen.body
        assert seen.json()["approval"]["args_redacted"]["auth"] == {"api_key": "<redacted>"}
    assert announced[second.id].json()["approval"]["args_redacted"]["amount"] == 300


def load_example_receiver() -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver.py"
    spec = importlib.util.spec_from_file_location("webhook_receiver_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_receiver_accepts_our_signature_and_only_ours(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load_example_receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), example.handler(SECRET, example.Seen()))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/interlock"
    clock = ManualClock(wall_start=time.time())  # the example checks freshness on the real clock
    try:
        with anyio.fail_after(TEST_LIMIT_S):
            good = notifier(url, clock)
            assert await good.deliver(record())
            await good.aclose()
            forged = notifier(url, clock, secret=SecretStr("not-the-secret-0123"))
            assert not await forged.deliver(record(id="forged"))  # a 401 is not retried
            await forged.aclose()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    printed = capsys.readouterr().out
    assert "approval AbCdEfGhIjKlMnOp: shop__refund by agent (big-refunds" in printed
    assert "forged" not in printed
    assert clock.slept == []
