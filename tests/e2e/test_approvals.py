"""Human approval gates end to end: a real gateway in front of the example CRM, real MCP clients of
both eras, decisions taken through the agent's own client (elicitation) and the REST API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, types
from mcp.client.context import ClientRequestContext

from tests.support import ROOT, Proc, gateway, gateway_error, http_get, stdio_server_toml

pytestmark = pytest.mark.anyio

POLICY = """
[[rules]]
name = "big-refunds"
match = { tools = ["crm__refund"] }
approval = { when = "args.amount > 100", timeout_s = 120, redact = ["reason"] }

[[rules]]
name = "held-refunds"
match = { tools = ["crmh__refund"] }
approval = { timeout_s = 120, mode = "hold" }

[[rules]]
name = "quick-expiry"
match = { tools = ["crmh__refund"] }
when = "args.reason == 'expire'"
approval = { timeout_s = 2, mode = "hold" }

[[rules]]
name = "echo-loops-need-a-human"
match = { tools = ["crmd__search_customers"] }
loops = { action = "approve", max_identical_calls = 2 }
"""

REFUND = {"customer_id": "C000123", "amount": 250, "reason": "damaged"}


@dataclass
class Demo:
    gateway: Proc
    tmp: Path
    records: dict[str, Path]

    def refunds(self, server: str) -> list[dict[str, Any]]:
        path = self.records[server]
        lines = path.read_text().splitlines() if path.exists() else []
        return [r["arguments"] for r in map(json.loads, lines) if r["tool"] == "refund"]

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        return rest(self.gateway, method, path, body)


def rest(gw: Proc, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(f"{gw.url}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _crm(sid: str, record: Path) -> str:
    env = f'env = {{ EXAMPLE_RECORD_FILE = "{record}" }}'
    return stdio_server_toml(sid, str(ROOT / "examples" / "crm_server.py"), extra=env)


def _config(tmp: Path, sids: tuple[str, ...]) -> tuple[str, dict[str, Path]]:
    (tmp / "policies").mkdir(exist_ok=True)
    (tmp / "policies" / "50-approvals.toml").write_text(POLICY)
    records = {sid: tmp / f"{sid}.jsonl" for sid in sids}
    head = f'[gateway]\nstate = "sqlite:///{tmp / "state.db"}"\n\n'
    return head + "".join(_crm(sid, records[sid]) for sid in sids), records


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("approvals")
    config, records = _config(tmp, ("crm", "crmh", "crmd"))
    with gateway(config, tmp) as gw:
        yield Demo(gw, tmp, records)


def _error(result: Any) -> dict[str, Any]:
    return gateway_error(result)


def _answering(decision: str, comment: str | None = None) -> Any:
    async def answer(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        assert "crm__refund" in params.message and "Rule big-refunds" in params.message
        content: dict[str, Any] = {"decision": decision}
        if comment:
            content["comment"] = comment
        return types.ElicitResult(action="accept", content=content)

    return answer


def _answers(decision: str, comment: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"decision": decision}
    if comment:
        content["comment"] = comment
    return {"interlock_approval": types.ElicitResult(action="accept", content=content)}


async def _ask_modern(c: Client, args: dict[str, Any]) -> types.InputRequiredResult:
    first = await c.session.call_tool("crm__refund", args, allow_input_required=True)
    assert isinstance(first, types.InputRequiredResult), first
    return first


# --- inside the agent's own client ----------------------------------------------------------------


async def test_modern_elicitation_approve_runs_the_call_once(demo: Demo) -> None:
    args = {**REFUND, "amount": 301}
    with anyio.fail_after(30):
        async with Client(demo.gateway.mcp_url, mode="2026-07-28", elicitation_callback=_answering("x")) as c:
            first = await _ask_modern(c, args)
            request = (first.input_requests or {})["interlock_approval"]
            assert request.method == "elicitation/create"
            assert demo.refunds("crm").count(args) == 0  # nothing ran while the human thinks
            final = await c.session.call_tool(
                "crm__refund", args, input_responses=_answers("approve"), request_state=first.request_state
            )
    assert isinstance(final, types.CallToolResult) and not final.is_error, final
    assert (final.structured_content or {})["amount"] == 301
    assert demo.refunds("crm").count(args) == 1


async def test_modern_elicitation_deny_gives_approval_denied(demo: Demo) -> None:
    args = {**REFUND, "amount": 302}
    with anyio.fail_after(30):
        async with Client(demo.gateway.mcp_url, mode="2026-07-28", elicitation_callback=_answering("x")) as c:
            first = await _ask_modern(c, args)
            final = await c.session.call_tool(
                "crm__refund",
                args,
                input_responses=_answers("deny", "too large"),
                request_state=first.request_state,
            )
    error = _error(final)
    assert error["code"] == "approval_denied"
    assert error["details"]["comment"] == "too large"
    assert error["details"]["decided_by"] == "client:anonymous"
    assert demo.refunds("crm").count(args) == 0


async def test_a_small_refund_needs_no_approval(demo: Demo) -> None:
    args = {**REFUND, "amount": 20}
    with anyio.fail_after(30):
        async with Client(demo.gateway.mcp_url, mode="2026-07-28") as c:
            result = await c.call_tool("crm__refund", args)
    assert not result.is_error
    assert demo.refunds("crm").count(args) == 1


@pytest.mark.parametrize(("decision", "code"), [("approve", None), ("deny", "approval_denied")])
async def test_legacy_elicitation_form(demo: Demo, decision: str, code: str | None) -> None:
    args = {**REFUND, "amount": 303 if decision == "approve" else 304}
    with anyio.fail_after(30):
        async with Client(
            demo.gateway.mcp_url, mode="legacy", elicitation_callback=_answering(decision)
        ) as c:
            result = await c.call_tool("crm__refund", args)
    if code is None:
        assert not result.is_error, result
        assert demo.refunds("crm").count(args) == 1
    else:
        assert _error(result)["code"] == code
        assert demo.refunds("crm").count(args) == 0


async def test_a_client_that_cannot_show_the_form_gets_approval_required(demo: Demo) -> None:
    args = {**REFUND, "amount": 314}

    async def broken(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ErrorData:
        return types.ErrorData(code=-32603, message="no screen to show a form on")

    with anyio.fail_after(30):
        async with Client(demo.gateway.mcp_url, mode="legacy", elicitation_callback=broken) as c:
            first = _error(await c.call_tool("crm__refund", args))
            approval_id = first["details"]["approval_id"]
            assert demo.api("POST", f"/admin/api/approvals/{approval_id}/approve", {})[0] == 200
            ran = await c.call_tool("crm__refund", args)
    assert first["code"] == "approval_required"
    assert not ran.is_error, ran
    assert demo.refunds("crm").count(args) == 1


async def test_a_tampered_or_replayed_request_state_is_refused(demo: Demo) -> None:
    args = {**REFUND, "amount": 305}
    with anyio.fail_after(30):
        async with Client(demo.gateway.mcp_url, mode="2026-07-28", elicitation_callback=_answering("x")) as c:
            first = await _ask_modern(c, args)
            state = first.request_state or ""
            body, mac = state.rsplit(".", 1)
            forged = f"{body}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
            tampered = await c.session.call_tool(
                "crm__refund", args, input_responses=_answers("approve"), request_state=forged
            )
            other_args = await c.session.call_tool(
                "crm__refund",
                {**args, "amount": 9999},
                input_responses=_answers("approve"),
                request_state=state,
            )
            honest = await c.session.call_tool(
                "crm__refund", args, input_responses=_answers("approve"), request_state=state
            )
            replayed = await c.session.call_tool(
                "crm__refund", args, input_responses=_answers("approve"), request_state=state
            )
    for refused in (tampered, other_args, replayed):
        assert isinstance(refused, types.CallToolResult)
        error = _error(refused)
        assert (error["code"], error["details"]["reason"]) == ("forbidden", "request_state_refused")
    assert "signature" in _error(tampered)["message"]
    assert "already used" in _error(replayed)["message"]
    assert isinstance(honest, types.CallToolResult) and not honest.is_error
    assert demo.refunds("crm").count(args) == 1


# --- out of band: defer, hold, expiry -------------------------------------------------------------


async def test_defer_then_the_identical_retry_runs_once_and_a_second_asks_again(demo: Demo) -> None:
    args = {**REFUND, "amount": 306, "reason": "secret refund"}
    with anyio.fail_after(30):
        async with Client(demo.gateway.mcp_url, mode="2026-07-28") as c:  # no elicitation declared
            asked = _error(await c.call_tool("crm__refund", args))
            again = _error(await c.call_tool("crm__refund", args))  # before a decision: same request
            approval_id = asked["details"]["approval_id"]
            status, record = demo.api("GET", f"/admin/api/approvals/{approval_id}")
            approved = demo.api("POST", f"/admin/api/approvals/{approval_id}/approve", {"comment": "ok"})
            ran = await c.call_tool("crm__refund", args)
            second = _error(await c.call_tool("crm__refund", args))
    assert asked["code"] == "approval_required" and asked["retryable"] is True
    assert asked["details"]["decide_url"].endswith(f"/admin/approvals/{approval_id}")
    assert again["details"]["approval_id"] == approval_id
    assert status == 200 and record["status"] == "pending" and record["rule"] == "big-refunds"
    assert record["args_redacted"]["reason"] == "<redacted>"  # the policy's redaction
    assert "secret refund" not in json.dumps(record)
    assert approved[0] == 200 and approved[1]["decided_by"] == "local-admin"
    assert not ran.is_error, ran
    assert second["code"] == "approval_required" and second["details"]["approval_id"] != approval_id
    assert demo.refunds("crm").count(args) == 1


async def test_hold_is_released_from_the_rest_api(demo: Demo) -> None:
    args = {**REFUND, "amount": 307}
    results: list[Any] = []
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async def call() -> None:
        async with Client(demo.gateway.mcp_url, mode="legacy") as c:
            results.append(await c.call_tool("crmh__refund", args, progress_callback=on_progress))

    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            pending = await _pending(demo, "crmh__refund", args)
            assert demo.refunds("crmh").count(args) == 0
            status, decided = demo.api("POST", f"/admin/api/approvals/{pending['id']}/approve", {})
    assert status == 200 and decided["status"] == "approved"
    assert not results[0].is_error, results[0]
    assert demo.refunds("crmh").count(args) == 1
    assert any(pending["id"] in message for message in progress), progress
    status, used = demo.api("GET", f"/admin/api/approvals/{pending['id']}")
    assert used["status"] == "used"


async def test_expiry_gives_approval_expired(demo: Demo) -> None:
    args = {**REFUND, "amount": 308, "reason": "expire"}
    with anyio.fail_after(30):
        async with Client(demo.gateway.mcp_url, mode="legacy") as c:
            result = await c.call_tool("crmh__refund", args)
    error = _error(result)
    assert error["code"] == "approval_expired"
    _, record = demo.api("GET", f"/admin/api/approvals/{error['details']['approval_id']}")
    assert record["status"] == "expired"
    assert demo.api("POST", f"/admin/api/approvals/{record['id']}/approve", {})[0] == 409
    assert demo.refunds("crmh").count(args) == 0


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_a_cancelled_held_call_withdraws_its_request(demo: Demo, era: str) -> None:
    # 2025-11-25: the client sends notifications/cancelled; 2026-07-28: it closes the request.
    args = {**REFUND, "amount": 309 if era == "legacy" else 313}
    with anyio.fail_after(40):
        async with Client(demo.gateway.mcp_url, mode=era) as c:
            async with anyio.create_task_group() as tg:
                tg.start_soon(c.call_tool, "crmh__refund", args)
                pending = await _pending(demo, "crmh__refund", args)
                tg.cancel_scope.cancel()
            record: dict[str, Any] = {}
            while record.get("status") != "denied":
                await anyio.sleep(0.1)
                record = demo.api("GET", f"/admin/api/approvals/{pending['id']}")[1]
    assert "cancelled" in (record["decided_by"] or "")
    assert demo.refunds("crmh").count(args) == 0


async def test_concurrent_approve_and_deny_give_exactly_one_decision(demo: Demo) -> None:
    args = {**REFUND, "amount": 310}
    async with Client(demo.gateway.mcp_url, mode="2026-07-28") as c:
        approval_id = _error(await c.call_tool("crm__refund", args))["details"]["approval_id"]
    verbs = ["approve", "deny"] * 8
    with ThreadPoolExecutor(len(verbs)) as pool:
        answers = list(
            pool.map(lambda v: demo.api("POST", f"/admin/api/approvals/{approval_id}/{v}", {}), verbs)
        )
    assert sorted(status for status, _ in answers) == [200] + [409] * (len(verbs) - 1)
    winner = next(body for status, body in answers if status == 200)
    final = demo.api("GET", f"/admin/api/approvals/{approval_id}")[1]
    assert final["status"] == winner["status"] and final["status"] in ("approved", "denied")
    conflicts = [body["error"] for status, body in answers if status == 409]
    assert all(error["details"]["status"] == final["status"] for error in conflicts)


async def test_a_detected_loop_with_action_approve_asks_a_human(demo: Demo) -> None:
    query = {"query": "Ada"}
    with anyio.fail_after(30):
        async with Client(demo.gateway.mcp_url, mode="2026-07-28") as c:
            first = await c.call_tool("crmd__search_customers", query)
            second = await c.call_tool("crmd__search_customers", query)
            third = _error(await c.call_tool("crmd__search_customers", query))
    assert not first.is_error and not second.is_error
    assert third["code"] == "approval_required"
    assert third["details"]["rule"] == "loops" and "loop detected" in third["details"]["reason"]


async def test_metrics_count_approvals(demo: Demo) -> None:
    status, text = await anyio.to_thread.run_sync(http_get, f"{demo.gateway.url}/metrics")
    assert status == 200
    assert "interlock_approvals_pending " in text
    assert 'interlock_approvals_total{decision="approved"}' in text
    assert "interlock_approval_wait_seconds_bucket" in text


async def _pending(demo: Demo, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """Wait until the gateway lists a pending request for exactly this call."""
    while True:
        status, body = demo.api("GET", "/admin/api/approvals?status=pending")
        assert status == 200, body
        for record in body["approvals"]:
            if record["tool"] == tool and record["args_redacted"].get("amount") == args["amount"]:
                return dict(record)
        await anyio.sleep(0.1)


# --- durability -----------------------------------------------------------------------------------


async def test_a_pending_request_survives_kill_9_and_can_be_decided(tmp_path: Path) -> None:
    config, records = _config(tmp_path, ("crm",))
    args = {**REFUND, "amount": 311}
    with gateway(config, tmp_path) as first:
        async with Client(first.mcp_url, mode="2026-07-28") as c:
            approval_id = _error(await c.call_tool("crm__refund", args))["details"]["approval_id"]
        first.proc.kill()  # SIGKILL: no shutdown hook runs
        first.proc.wait(timeout=10)
    with gateway(config, tmp_path, port=first.port) as second:
        status, record = rest(second, "GET", f"/admin/api/approvals/{approval_id}")
        assert (status, record["status"]) == (200, "pending")
        assert rest(second, "POST", f"/admin/api/approvals/{approval_id}/approve", {})[0] == 200
        async with Client(second.mcp_url, mode="2026-07-28") as c:
            result = await c.call_tool("crm__refund", args)
    assert not result.is_error, result
    lines = records["crm"].read_text().splitlines()
    assert [json.loads(x)["arguments"] for x in lines].count(args) == 1


async def test_strict_toml_gates_destructive_tools_on_trusted_servers(tmp_path: Path) -> None:
    config, records = _config(tmp_path, ("crm",))
    (tmp_path / "policies" / "50-approvals.toml").unlink()
    strict = (ROOT / "policies" / "examples" / "strict.toml").read_text()
    (tmp_path / "policies" / "90-strict.toml").write_text(strict)
    with gateway(config, tmp_path) as gw:
        async with Client(gw.mcp_url, mode="2026-07-28") as c:
            refund = _error(await c.call_tool("crm__refund", {**REFUND, "amount": 5}))
            read = await c.call_tool("crm__get_customer", {"customer_id": "C000123"})
    assert refund["code"] == "approval_required"
    assert refund["details"]["rule"] == "strict-destructive-needs-approval"
    assert not read.is_error  # read-only: no human needed
    assert not records["crm"].exists() or "refund" not in records["crm"].read_text()


async def test_each_new_request_is_posted_to_the_webhook_signed(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from gateway.approvals.webhook import verify_signature

    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(500 if len(received) == 1 else 200)  # the first attempt fails
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Thread(target=server.serve_forever, daemon=True).start()
    secret = "w" * 32
    config, _ = _config(tmp_path, ("crm",))
    hook = (
        f'[approvals.webhook]\nurl = "http://127.0.0.1:{server.server_port}/hook"\n'
        f'secret = "{secret}"\nbase_delay_s = 0.05\nmax_delay_s = 0.2\n\n'
    )
    try:
        with gateway(hook + config, tmp_path) as gw:
            async with Client(gw.mcp_url, mode="2026-07-28") as c:
                asked = _error(await c.call_tool("crm__refund", {**REFUND, "amount": 312}))
            with anyio.fail_after(20):
                while len(received) < 2:  # noqa: ASYNC110 (the receiver runs in a thread)
                    await anyio.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
    (first_headers, first_body), (headers, body) = received[:2]
    payload = json.loads(body)
    assert payload["type"] == "approval.requested"
    assert payload["approval"]["id"] == asked["details"]["approval_id"]
    assert payload["approval"]["args_redacted"]["reason"] == "<redacted>"
    assert payload["decide_url"] == asked["details"]["decide_url"]
    assert first_body == body and first_headers["x-interlock-delivery"] == headers["x-interlock-delivery"]
    timestamp, signature = headers["x-interlock-timestamp"], headers["x-interlock-signature"]
    assert verify_signature(secret, timestamp, body, signature, now=float(timestamp))
    assert not verify_signature(secret, timestamp, body + b" ", signature, now=float(timestamp))


async def test_two_replicas_on_redis_share_requests_and_decisions(tmp_path: Path) -> None:
    """Asked on one replica, decided and run on the other: records live in the shared store."""
    from tests.state import delete_prefix, random_prefix, shared_redis_url

    url = shared_redis_url()
    prefix = random_prefix()
    state = f"{url}?prefix={prefix}"
    args = {**REFUND, "amount": 315}
    replicas = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        config, records = _config(folder, ("crm",))
        replicas.append((folder, config.replace(f"sqlite:///{folder / 'state.db'}", state), records))
    try:
        (a_dir, a_config, a_records), (b_dir, b_config, b_records) = replicas
        with gateway(a_config, a_dir) as a, gateway(b_config, b_dir) as b:
            async with Client(a.mcp_url, mode="2026-07-28") as c:
                approval_id = _error(await c.call_tool("crm__refund", args))["details"]["approval_id"]
            listed = rest(b, "GET", "/admin/api/approvals?status=pending")[1]["approvals"]
            assert approval_id in [r["id"] for r in listed]
            assert rest(b, "POST", f"/admin/api/approvals/{approval_id}/approve", {})[0] == 200
            assert rest(a, "POST", f"/admin/api/approvals/{approval_id}/deny", {})[0] == 409
            async with Client(b.mcp_url, mode="2026-07-28") as c:
                ran = await c.call_tool("crm__refund", args)
            async with Client(a.mcp_url, mode="2026-07-28") as c:
                again = _error(await c.call_tool("crm__refund", args))
        assert not ran.is_error, ran
        assert again["code"] == "approval_required" and again["details"]["approval_id"] != approval_id
        ran_on = [r for r in (a_records["crm"], b_records["crm"]) if r.exists() and "refund" in r.read_text()]
        assert ran_on == [b_records["crm"]]
    finally:
        await delete_prefix(url, prefix)
