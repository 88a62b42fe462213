"""Flaky trading API demo upstream: answers 401/429/500 or hangs, on demand or at random.

    python examples/flaky_server.py                               # stdio
    python examples/flaky_server.py --transport http --port 8103  # http://127.0.0.1:8103/mcp

Env: FLAKY_MODE = ok | 401 | 429 | 500 | hang | random (default ok); FLAKY_FAILURE_RATE (random
mode, default 0.5); FLAKY_SEED (random mode, for reproducible runs); FLAKY_HTTP_BODY = jsonrpc |
text (what an HTTP failure carries, default jsonrpc). The `set_mode` tool changes the mode at runtime.

Only `get_quote` and `place_order` misbehave. On stdio a failure is an isError result whose text
reads like the HTTP failure ("429 Too Many Requests; Retry-After: 2"). Over HTTP, `StatusGate`
(an ASGI wrapper in front of the SDK app) reads each POST's JSON-RPC body and answers a failing
tools/call itself with the real status code (429 with `Retry-After: 2`, 401 with
`WWW-Authenticate`), and holds a hanging call open until the client gives up.
"""

from __future__ import annotations

import json
import os
import random
import zlib
from typing import Annotated, Literal

import _serve
import anyio
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Mode = Literal["ok", "401", "429", "500", "hang", "random"]
MODES: tuple[Mode, ...] = ("ok", "401", "429", "500", "hang", "random")
FAILURES = {
    "401": "401 Unauthorized",
    "429": "429 Too Many Requests; Retry-After: 2",
    "500": "500 Internal Server Error",
}
GATED_TOOLS = frozenset({"get_quote", "place_order"})


class Behaviour:
    """The current mode, and the one place that decides how the next gated call goes."""

    def __init__(self) -> None:
        self.mode = self._checked(os.environ.get("FLAKY_MODE", "ok"))
        self.remaining = 0  # > 0: misbehave for this many more calls, then back to ok
        self.rate = float(os.environ.get("FLAKY_FAILURE_RATE", "0.5"))
        seed = os.environ.get("FLAKY_SEED")
        self.rng = random.Random(int(seed) if seed is not None else None)
        self.decided_by_http_gate = False  # over HTTP the gate decides, so the tools must not decide again

    @staticmethod
    def _checked(mode: str) -> Mode:
        for known in MODES:
            if mode == known:
                return known
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")

    def set(self, mode: str, count: int) -> None:
        self.mode, self.remaining = self._checked(mode), max(count, 0)

    def next_outcome(self) -> str:
        """Consume one call: "ok", "hang" or a status code from FAILURES."""
        mode = self.mode
        if self.remaining > 0:
            self.remaining -= 1
            if self.remaining == 0:
                self.mode = "ok"
        if mode == "random":
            return self.rng.choice(("429", "500")) if self.rng.random() < self.rate else "ok"
        return mode


BEHAVIOUR = Behaviour()
ORDERS: list[str] = []


class Quote(BaseModel):
    symbol: str
    price: float
    currency: Literal["USD"]


class Order(BaseModel):
    order_id: str
    symbol: str
    qty: int
    price: float
    status: Literal["filled"]


class ModeState(BaseModel):
    mode: str
    remaining_calls: int


mcp = MCPServer(
    "flaky", version="1.0.0", instructions="A trading API that is down more often than it should be."
)


def _price(symbol: str) -> float:
    return round(50 + zlib.crc32(symbol.upper().encode()) % 50_000 / 100, 2)


def _ok(model: BaseModel) -> CallToolResult:
    text = model.model_dump_json()
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump()
    )


async def _misbehave() -> CallToolResult | None:
    if BEHAVIOUR.decided_by_http_gate:
        return None
    outcome = BEHAVIOUR.next_outcome()
    if outcome == "hang":
        await anyio.sleep_forever()  # cancelled by notifications/cancelled or the client going away
    if outcome in FAILURES:
        return CallToolResult(content=[TextContent(type="text", text=FAILURES[outcome])], is_error=True)
    return None


@mcp.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True))
async def get_quote(symbol: str) -> Annotated[CallToolResult, Quote]:
    """Current price of a ticker symbol."""
    return await _misbehave() or _ok(Quote(symbol=symbol.upper(), price=_price(symbol), currency="USD"))


@mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False))
async def place_order(symbol: str, qty: Annotated[int, Field(gt=0)]) -> Annotated[CallToolResult, Order]:
    """Buy `qty` shares at market. Every call places a new order."""
    if failure := await _misbehave():
        return failure
    ORDERS.append(order_id := f"O{len(ORDERS) + 1:06d}")
    return _ok(
        Order(order_id=order_id, symbol=symbol.upper(), qty=qty, price=_price(symbol), status="filled")
    )


@mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True))
def set_mode(mode: Mode, count: Annotated[int, Field(ge=0)] = 0) -> ModeState:
    """Set how get_quote/place_order behave; count > 0 applies it to the next `count` calls only."""
    BEHAVIOUR.set(mode, count)
    return ModeState(mode=BEHAVIOUR.mode, remaining_calls=BEHAVIOUR.remaining)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that yields the already-read body once, then defers to the real one."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class StatusGate:
    """ASGI wrapper that turns a failing tools/call into a real HTTP failure, before the SDK sees it.

    It reads the POST body, and for a tools/call of a gated tool consumes one outcome from
    BEHAVIOUR. A failure is answered here with its status code; a hang keeps the request open
    until the client disconnects; anything else is passed to the SDK app with the body replayed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks = [await receive()]
        while chunks[-1].get("more_body"):
            chunks.append(await receive())
        body = b"".join(c.get("body", b"") for c in chunks)
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        gated = (
            isinstance(message, dict)
            and message.get("method") == "tools/call"
            and (message.get("params") or {}).get("name") in GATED_TOOLS
        )
        outcome = BEHAVIOUR.next_outcome() if gated else "ok"
        if outcome == "hang":
            while (await receive())["type"] != "http.disconnect":
                pass
        elif outcome in FAILURES and isinstance(message, dict):
            await self._fail(int(outcome), message.get("id"), scope, receive, send)
        else:
            await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _fail(status: int, request_id: object, scope: Scope, receive: Receive, send: Send) -> None:
        text = FAILURES[str(status)]
        headers = {"Retry-After": "2"} if status == 429 else {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        if os.environ.get("FLAKY_HTTP_BODY", "jsonrpc") == "text":  # what a bare reverse proxy would send
            await Response(text, status, headers, media_type="text/plain")(scope, receive, send)
            return
        # A JSON-RPC error body is what survives the SDK client: it surfaces as MCPError(message=text),
        # while a non-JSON-RPC body becomes a generic "Server returned an error response".
        data = {"status": status, "retry_after_s": 2} if status == 429 else {"status": status}
        error = {"code": -32000, "message": text, "data": data}
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error})
        await Response(body, status, headers, media_type="application/json")(scope, receive, send)


def _gate(app: ASGIApp) -> ASGIApp:
    BEHAVIOUR.decided_by_http_gate = True
    return StatusGate(app)


if __name__ == "__main__":
    _serve.main(mcp, __doc__, 8103, wrap=_gate)
