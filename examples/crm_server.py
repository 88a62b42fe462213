"""CRM demo upstream: customers, lookups and a destructive `refund`, with an optional token check.

    python examples/crm_server.py                               # stdio
    python examples/crm_server.py --transport http --port 8101  # http://127.0.0.1:8101/mcp

Env: CRM_REQUIRE_TOKEN (when set, every tool call needs this token), CRM_TOKEN (the token this
process presents; over HTTP an `Authorization: Bearer ...` header takes precedence).
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Annotated, Any, Literal

import _serve
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

CustomerId = Annotated[str, Field(pattern=r"^C[0-9]{6}$", description="Customer id, e.g. C000123")]


class Customer(BaseModel):
    customer_id: str
    name: str
    email: str
    tier: Literal["free", "pro", "enterprise"]
    balance: float


class SearchResult(BaseModel):
    customers: list[Customer]
    total: int


class Refund(BaseModel):
    refund_id: str
    customer_id: str
    amount: float
    reason: str
    status: Literal["issued"]


_NAMES = [
    "Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov",
    "Donald Knuth", "Margaret Hamilton", "Ken Thompson", "Dennis Ritchie", "Frances Allen",
    "John Backus", "Radia Perlman", "Tony Hoare", "Leslie Lamport", "Niklaus Wirth",
    "Katherine Johnson", "Guido van Rossum", "Adele Goldberg", "Vint Cerf", "Hedy Lamarr",
]  # fmt: skip
_TIERS: list[Literal["free", "pro", "enterprise"]] = ["free", "pro", "enterprise"]
# Ids C000110..C000129, so the documented example id C000123 exists.
CUSTOMERS = {
    f"C{110 + i:06d}": Customer(
        customer_id=f"C{110 + i:06d}",
        name=name,
        email=name.lower().replace(" ", ".") + "@example.com",
        tier=_TIERS[i % 3],
        balance=round(100.0 + 37.5 * i, 2),
    )
    for i, name in enumerate(_NAMES)
}
REFUNDS: list[Refund] = []

mcp = MCPServer("crm", version="1.0.0", instructions="A small CRM. Ids look like C000123.")


def _result(model: BaseModel) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=model.model_dump_json())],
        structured_content=model.model_dump(mode="json"),
    )


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


@mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
def search_customers(query: str, limit: Annotated[int, Field(ge=1, le=100)] = 10) -> SearchResult:
    """Find customers whose id, name or email contains `query` (case-insensitive)."""
    needle = query.lower()
    hits = [c for c in CUSTOMERS.values() if needle in f"{c.customer_id} {c.name} {c.email}".lower()]
    return SearchResult(customers=hits[:limit], total=len(hits))


@mcp.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
def get_customer(customer_id: CustomerId) -> Annotated[CallToolResult, Customer]:
    """Fetch one customer by id."""
    customer = CUSTOMERS.get(customer_id)
    if customer is None:
        return _error(f"404 Not Found: customer {customer_id} does not exist")
    return _result(customer)


@mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False))
def refund(
    customer_id: CustomerId, amount: Annotated[float, Field(gt=0)], reason: str
) -> Annotated[CallToolResult, Refund]:
    """Refund `amount` to a customer's balance. Every call issues a new refund."""
    customer = CUSTOMERS.get(customer_id)
    if customer is None:
        return _error(f"404 Not Found: customer {customer_id} does not exist")
    customer.balance = round(customer.balance + amount, 2)
    issued = Refund(
        refund_id=f"R{len(REFUNDS) + 1:06d}",
        customer_id=customer_id,
        amount=amount,
        reason=reason,
        status="issued",
    )
    REFUNDS.append(issued)
    return _result(issued)


@mcp.resource("crm://customers/{customer_id}", mime_type="application/json")
def customer_resource(customer_id: str) -> str:
    """One customer record."""
    customer = CUSTOMERS.get(customer_id)
    if customer is None:
        raise ResourceNotFoundError(f"customer {customer_id} does not exist")
    return customer.model_dump_json()


@mcp.resource("crm://stats", mime_type="application/json")
def stats() -> str:
    """Totals across the CRM."""
    refunded = round(sum(r.amount for r in REFUNDS), 2)
    return json.dumps({"customers": len(CUSTOMERS), "refunds": len(REFUNDS), "refunded_total": refunded})


@mcp.prompt()
def customer_summary(customer_id: str) -> str:
    """Ask the model for a short account summary of one customer."""
    customer = CUSTOMERS.get(customer_id)
    record = customer.model_dump_json() if customer else f"(no customer {customer_id})"
    return f"Summarise this customer's account in three sentences for a support agent:\n{record}"


def _presented_token(ctx: ServerRequestContext[Any, Any]) -> str:
    headers = getattr(ctx.request, "headers", None)
    auth = headers.get("authorization", "") if headers is not None else ""
    return auth[7:] if auth.lower().startswith("bearer ") else os.environ.get("CRM_TOKEN", "")


async def require_token(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Answer every tools/call with 401 before any tool runs, as an API behind an auth layer would."""
    required = os.environ.get("CRM_REQUIRE_TOKEN")
    if ctx.method == "tools/call" and required and not hmac.compare_digest(_presented_token(ctx), required):
        return _error("401 Unauthorized: invalid CRM token")
    return await call_next(ctx)


mcp.middleware.append(require_token)


if __name__ == "__main__":
    _serve.main(mcp, __doc__, 8101)
