"""A webhook receiver for Interlock's approval requests, using only the standard library.

It checks the signature and the timestamp, drops duplicate deliveries, and prints each request with
the link to decide it. Start it, then point ``[approvals.webhook]`` at it:

    INTERLOCK_WEBHOOK_SECRET=change-me-0123456789 .venv/bin/python examples/webhook_receiver.py --port 8190

    [approvals.webhook]
    url = "http://127.0.0.1:8190/interlock"
    secret = "${INTERLOCK_WEBHOOK_SECRET}"

Copy ``verify`` into your own receiver; the rest is a demo. See docs/webhook.md.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_S = 300
"""How old a delivery may be; older ones may be replays of a body someone captured."""


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float | None = None) -> bool:
    """Whether ``body`` was signed with ``secret`` by Interlock within the last five minutes.

    ``timestamp`` and ``signature`` are the ``X-Interlock-Timestamp`` and ``X-Interlock-Signature``
    headers; ``body`` must be the raw bytes received, as re-serialized JSON would not match."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > TOLERANCE_S:
        return False
    mac = hmac.new(secret.encode(), f"{sent}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(f"sha256={mac.hexdigest()}".encode(), signature.encode("ascii", "replace"))


class Seen:
    """The last delivery ids, so a retry whose first attempt did arrive is not handled twice."""

    def __init__(self, size: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first_time(self, delivery: str) -> bool:
        if delivery in self._ids:
            return False
        self._ids[delivery] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


def handler(secret: str, seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            timestamp = self.headers.get("X-Interlock-Timestamp", "")
            signature = self.headers.get("X-Interlock-Signature", "")
            if not verify(secret, timestamp, body, signature):
                self._answer(401, "bad signature")
                return
            # Answer 2xx for a duplicate too: the gateway only needs to know it arrived.
            if seen.first_time(self.headers.get("X-Interlock-Delivery", "")):
                show(json.loads(body))
            self._answer(200, "ok")

        def _answer(self, status: int, text: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def show(event: Mapping[str, Any]) -> None:
    approval = event["approval"]
    left = int(approval["expires"] - time.time())
    print(
        f"approval {approval['id']}: {approval['tool']} by {approval['client']} "
        f"({approval['rule']}: {approval['reason']}); {left}s to decide at {event['decide_url']}",
        flush=True,
    )
    print("  arguments:", json.dumps(approval["args_redacted"], sort_keys=True), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8190)
    args = parser.parse_args()
    secret = os.environ.get("INTERLOCK_WEBHOOK_SECRET")
    if not secret:
        raise SystemExit("set INTERLOCK_WEBHOOK_SECRET to the secret in [approvals.webhook]")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(secret, Seen()))
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
