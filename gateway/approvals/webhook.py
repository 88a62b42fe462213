"""The webhook channel: each new approval request is POSTed to one configured URL.

A notification, not a decision path: the record stays in the state store whatever happens here, and
humans decide through the REST API, the CLI or the web UI (the payload carries the link). So the
notifier never blocks a request (``submit`` only enqueues, and drops with a count when the queue is
full), never raises out of its worker, and gives up after ``max_attempts``.

Signing: with a secret, each attempt carries ``X-Interlock-Timestamp`` and
``X-Interlock-Signature: sha256=HMAC(secret, "<timestamp>." + body)``; the timestamp is inside the
MAC so an old body cannot be replayed later with a fresh header. The retries of one delivery carry
the same body and the same ``X-Interlock-Delivery``, so a receiver that saw an attempt whose answer
got lost can tell the retry is a duplicate; only the timestamp and signature are renewed. The
payload format is documented in docs/webhook.md.

Webhook URLs are often credentials themselves (Slack's are), so logs name only scheme://host.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import httpx2

from gateway.approvals.records import ApprovalRecord
from gateway.config import WebhookSettings
from gateway.core.clock import Clock
from gateway.upstream.translate import retry_after_seconds

log = logging.getLogger("interlock.approvals.webhook")

QUEUE_SIZE = 1_000
CONCURRENCY = 4
"""Deliveries in flight at once: one receiver in backoff must not hold up every other request."""
RETRY_STATUSES = frozenset({408, 429})
"""Besides 5xx: the receiver asked us to come back later."""
SIGNATURE_TOLERANCE_S = 300.0
_SLACK_TEXT_MAX = 2_900  # a section's text may hold 3,000 characters

Outcome = Literal["ok", "retry", "refused"]


# -- signing ---------------------------------------------------------------------------------------


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Interlock-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(_secret_bytes(secret), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """Whether ``signature`` is ours for exactly this ``body`` and ``timestamp``, and the timestamp
    is within ``tolerance_s`` of ``now``: what a receiver checks before trusting a delivery.

    ``timestamp`` and ``signature`` are the raw header values; ``body`` the raw bytes received
    (re-serialized JSON would not match). The comparison is constant-time.
    """
    try:
        sent = int(timestamp.strip())
    except (AttributeError, ValueError):
        return False
    if abs(now - sent) > tolerance_s:
        return False
    expected = sign(secret, sent, body).encode("ascii")
    try:
        given = signature.strip().encode("ascii")
    except (AttributeError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(expected, given)


# -- payloads --------------------------------------------------------------------------------------


def interlock_payload(record: ApprovalRecord, decide_url: str, sent_at: int) -> dict[str, Any]:
    """The default body: the record as the REST API shows it (its arguments already redacted);
    ``sent_at`` is when the delivery was first attempted."""
    return {
        "type": "approval.requested",
        "approval": record.to_json(),
        "decide_url": decide_url,
        "sent_at": sent_at,
    }


def _slack_escape(text: str) -> str:
    # The three characters Slack's mrkdwn gives a meaning; anything else shows as written.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(record: ApprovalRecord, decide_url: str) -> dict[str, Any]:
    """A Slack-style incoming-webhook message: ``text`` for notifications, ``blocks`` to read."""
    tool, client = _slack_escape(record.tool), _slack_escape(record.client)
    rule, reason = _slack_escape(record.rule), _slack_escape(record.reason)
    expires = int(record.expires)
    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    # Slack renders <!date^...> in each reader's own time zone; other receivers show the fallback.
    when = f"<!date^{expires}^{{date_short_pretty}} {{time}}|{fallback}>"
    args = json.dumps(record.args_redacted, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    args = _clip(_slack_escape(args).replace("```", "`\u200b``"), _SLACK_TEXT_MAX)
    return {
        "text": f"Approval needed: {tool} called by {client} ({rule}: {_clip(reason, 200)}). "
        f"Decide by {fallback}: {decide_url}",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Approval needed:* `{_clip(tool, 200)}`"},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Client*\n{_clip(client, 500)}"},
                    {"type": "mrkdwn", "text": f"*Server*\n{_clip(_slack_escape(record.server), 500)}"},
                    {"type": "mrkdwn", "text": f"*Rule*\n{_clip(rule, 500)}"},
                    {"type": "mrkdwn", "text": f"*Expires*\n{when}"},
                ],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n{_clip(reason, 2_000)}"}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Arguments* (redacted)\n```{args}```"},
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Review and decide"},
                        "url": decide_url,
                        "style": "primary",
                    }
                ],
            },
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"approval `{_slack_escape(record.id)}`"}],
            },
        ],
    }


def where(url: str) -> str:
    """``scheme://host[:port]`` of a URL: all of it that may be logged."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}"


# -- the notifier ----------------------------------------------------------------------------------


class WebhookNotifier:
    """Announces new approval requests to ``settings.url``; one worker loop, ``run()``.

    ``decide_url(id)`` gives the link humans follow to decide (the web UI). Counters for metrics
    and tests: ``delivered``, ``failed`` (gave up) and ``dropped`` (never sent: queue full, or
    the notifier closed).
    """

    def __init__(
        self,
        settings: WebhookSettings,
        clock: Clock,
        *,
        decide_url: Callable[[str], str],
        client: httpx2.AsyncClient | None = None,
        queue_size: int = QUEUE_SIZE,
        concurrency: int = CONCURRENCY,
    ) -> None:
        if queue_size < 1 or concurrency < 1:
            raise ValueError("queue_size and concurrency must be at least 1")
        self.settings = settings
        self.clock = clock
        self._decide_url = decide_url
        self._client = client
        self._owns_client = client is None
        self._secret = settings.secret.get_secret_value().encode() if settings.secret else None
        self._where = where(settings.url)
        self._queue: deque[ApprovalRecord] = deque()
        self._queue_size = queue_size
        self._concurrency = concurrency
        self._wake: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._closed = False
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    # -- the queue ---------------------------------------------------------------------------------

    def submit(self, record: ApprovalRecord) -> None:
        """Enqueue ``record`` for delivery; never blocks, never raises."""
        if self._closed:
            self.dropped += 1
            log.warning("webhook %s: closed, approval %s not announced", self._where, record.id)
            return
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
            log.warning(
                "webhook %s: queue full (%d waiting), approval %s not announced (%d dropped so far)",
                self._where,
                len(self._queue),
                record.id,
                self.dropped,
            )
            return
        self._queue.append(record)
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Deliver queued records until ``aclose()`` or cancellation; never raises otherwise."""
        slots = anyio.Semaphore(self._concurrency)
        with anyio.CancelScope() as self._scope:
            async with anyio.create_task_group() as tg:
                while (record := await self._next()) is not None:
                    await slots.acquire()
                    tg.start_soon(self._deliver_in_slot, record, slots)
        self._scope = None

    async def _next(self) -> ApprovalRecord | None:
        while not self._queue:
            if self._closed:
                return None
            self._wake = anyio.Event()
            await self._wake.wait()
        return self._queue.popleft()

    async def _deliver_in_slot(self, record: ApprovalRecord, slots: anyio.Semaphore) -> None:
        try:
            await self.deliver(record)
        except Exception as exc:  # a notification must never take the gateway's task group down
            self.failed += 1
            log.error("webhook %s: approval %s not announced: %s", self._where, record.id, self._scrub(exc))
        finally:
            slots.release()

    async def aclose(self) -> None:
        """Stop the worker (queued and in-flight deliveries are abandoned) and close our client."""
        self._closed = True
        if self._queue:
            self.dropped += len(self._queue)
            log.info("webhook %s: closing with %d approvals not announced", self._where, len(self._queue))
            self._queue.clear()
        if self._scope is not None:
            self._scope.cancel()
        if self._wake is not None:
            self._wake.set()
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- one delivery ------------------------------------------------------------------------------

    async def deliver(self, record: ApprovalRecord) -> bool:
        """POST one announcement, retrying transient failures; True once the receiver took it."""
        if self._closed:
            self.dropped += 1
            return False
        delivery = str(uuid.uuid4())
        # One body for every attempt, so a receiver sees a retry as the same delivery byte for byte;
        # only the signature headers are renewed, to stay within the receiver's freshness window.
        body = self._body(record, self._decide_url(record.id), int(self.clock.wall()))
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            outcome, retry_after_s = await self._attempt(record.id, body, delivery)
            if outcome == "ok":
                self.delivered += 1
                return True
            if outcome == "refused":
                break
            if attempt == attempts:
                log.warning(
                    "webhook %s: approval %s not announced after %d attempts (delivery %s)",
                    self._where,
                    record.id,
                    attempts,
                    delivery,
                )
                break
            await self.clock.sleep(self._delay(attempt, retry_after_s))
        self.failed += 1
        return False

    async def _attempt(self, approval_id: str, body: bytes, delivery: str) -> tuple[Outcome, float]:
        """One POST, and what to do next; with ``retry``, the receiver's Retry-After (0: none)."""
        try:
            response = await self._http().post(
                self.settings.url,
                content=body,
                headers=self._headers(body, int(self.clock.wall()), delivery),
                timeout=self.settings.timeout_s,
            )
        except httpx2.TransportError as exc:  # refused, reset, timed out, dropped mid-answer
            log.info("webhook %s: approval %s: %s; will retry", self._where, approval_id, self._scrub(exc))
            return "retry", 0.0
        status = response.status_code
        if 200 <= status < 300:
            log.debug("webhook %s: approval %s announced (HTTP %d)", self._where, approval_id, status)
            return "ok", 0.0
        if status >= 500 or status in RETRY_STATUSES:
            log.info("webhook %s: approval %s: HTTP %d; will retry", self._where, approval_id, status)
            return "retry", self._retry_after(response.headers.get("retry-after"))
        # Another 4xx (or a redirect, which a signed POST does not follow): retrying cannot help.
        log.warning(
            "webhook %s: approval %s refused with HTTP %d; not retrying (check the URL and secret)",
            self._where,
            approval_id,
            status,
        )
        return "refused", 0.0

    def _body(self, record: ApprovalRecord, decide_url: str, sent_at: int) -> bytes:
        if self.settings.format == "slack":
            payload = slack_payload(record, decide_url)
        else:
            payload = interlock_payload(record, decide_url, sent_at)
        return json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")

    def _headers(self, body: bytes, sent_at: int, delivery: str) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "interlock",
            "X-Interlock-Delivery": delivery,
        }
        if self._secret is not None:
            headers["X-Interlock-Timestamp"] = str(sent_at)
            headers["X-Interlock-Signature"] = sign(self._secret, sent_at, body)
        return headers

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds before attempt ``attempt + 1``: the receiver's Retry-After when it gave one,
        else a random point between the base delay and an exponentially growing ceiling (full
        jitter, so receivers recovering from an outage are not hit by every gateway at once)."""
        base, cap = self.settings.base_delay_s, max(self.settings.base_delay_s, self.settings.max_delay_s)
        if retry_after_s:
            return min(retry_after_s, cap)
        ceiling = min(cap, base * 2.0**attempt)
        return random.uniform(base, ceiling)

    @staticmethod
    def _retry_after(value: str | None) -> float:
        try:
            return retry_after_seconds(value) or 0.0
        except (TypeError, ValueError):  # an unparseable date: fall back to our own backoff
            return 0.0

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            # Built on first use: a gateway whose approvals never fire pays nothing for TLS setup.
            self._client = httpx2.AsyncClient(follow_redirects=False, trust_env=True)
        return self._client

    def _scrub(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return text.replace(self.settings.url, self._where)
