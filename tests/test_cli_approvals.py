"""`interlock approvals ...` run as a user would, as a subprocess, against a real HTTP server.

The server is the gateway's own admin routes (``gateway.web.routes.admin_routes``) over a real
``ApprovalService`` on a manual clock, behind a small ``AdminBackend``; uvicorn serves them on a
blocking portal's event loop, so a test can add and inspect records on that same loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from anyio.from_thread import BlockingPortal, start_blocking_portal
from pydantic import SecretStr
from starlette.applications import Starlette

from gateway.approvals import ApprovalRecord, ApprovalService
from gateway.approvals.service import record_key
from gateway.config import AdminSettings, AdminUser
from gateway.core.clock import ManualClock
from gateway.observe.recent import RecentCall
from gateway.state import MemoryStateStore
from gateway.web.backend import CircuitView, UpstreamView
from gateway.web.routes import admin_routes
from tests.calls import tool_call
from tests.support import INTERLOCK, ROOT, free_port

TOKEN = "alice-admin-token-0123456789"
USERS = AdminSettings(users=[AdminUser(name="alice", token=SecretStr(TOKEN), groups=["ops"])])
RAW_SECRET = "sk-live-0123456789"


@dataclass
class Backend:
    """What the admin plane needs from a gateway: here only the approvals matter."""

    admin: AdminSettings
    approvals: ApprovalService
    url: str

    def public_url(self) -> str:
        return self.url

    async def decide(
        self, approval_id: str, approve: bool, *, by: str, comment: str | None = None
    ) -> ApprovalRecord:
        return await self.approvals.decide(approval_id, approve, by=by, comment=comment)

    def upstreams(self) -> list[UpstreamView]:
        return []

    def circuits(self) -> list[CircuitView]:
        return []

    def recent_calls(self, limit: int = 50) -> list[RecentCall]:
        return []


@dataclass
class Gateway:
    url: str
    port: int
    portal: BlockingPortal
    service: ApprovalService
    clock: ManualClock

    def request(self, amount: int = 250, **options: Any) -> ApprovalRecord:
        args = {"order": "O-1", "amount": amount, "auth": {"api_key": RAW_SECRET}}
        call = tool_call("shop", "refund", args, principal="agent", session="s9")
        options = {
            "rule": "big-refunds",
            "reason": "refunds over 100 need a human",
            "timeout_s": 900,
            **options,
        }
        record: ApprovalRecord = self.portal.call(lambda: self.service.request(call, **options))
        return record

    def get(self, approval_id: str) -> ApprovalRecord:
        record: ApprovalRecord = self.portal.call(self.service.get, approval_id)
        return record


@contextmanager
def serve(admin: AdminSettings) -> Iterator[Gateway]:
    clock = ManualClock()
    service = ApprovalService(MemoryStateStore(clock), clock)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = Starlette(routes=admin_routes(Backend(admin, service, url)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    with start_blocking_portal() as portal:
        done = portal.start_task_soon(server.serve)
        try:
            portal.call(_started, server)
            yield Gateway(url, port, portal, service, clock)
        finally:
            server.should_exit = True
            done.result(timeout=10)
            portal.call(service.store.close)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with serve(USERS) as started:
        yield started


async def _started(server: uvicorn.Server) -> None:
    with anyio.fail_after(10):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for this)
            await anyio.sleep(0.01)


def cli(
    *args: str, url: str | None = None, token: str | None = TOKEN, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    if url is not None:
        env["INTERLOCK_URL"] = url
    if token is not None:
        env["INTERLOCK_ADMIN_TOKEN"] = token
    return subprocess.run(
        [*INTERLOCK, "approvals", *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


def test_list_shows_pending_requests_as_a_table(gateway: Gateway) -> None:
    small = gateway.request(150)
    gateway.clock.advance(1)
    big = gateway.request(900, approvers=["ops"])
    done = cli("list", url=gateway.url)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["ID", "TOOL", "CLIENT", "RULE", "STATUS", "LEFT", "/", "DECIDED"]
    assert [row.split()[0] for row in rows] == [big.id, small.id]  # newest first
    assert rows[0].split()[1:5] == ["shop__refund", "agent", "big-refunds", "pending"]
    assert rows[0].endswith("15m 00s left") and rows[1].endswith("14m 59s left")

    as_json = json.loads(cli("list", "--json", url=gateway.url).stdout)
    assert {r["id"] for r in as_json["approvals"]} == {small.id, big.id}

    gateway.portal.call(lambda: gateway.service.decide(small.id, False, by="bob"))
    decided = cli("list", "--status", "denied", url=gateway.url).stdout
    assert small.id in decided and big.id not in decided and "by bob" in decided
    assert cli("list", "--status", "approved", url=gateway.url).stdout == "no approved approval requests\n"
    everything = cli("list", "--status", "all", url=gateway.url).stdout
    assert small.id in everything and big.id in everything


def test_show_prints_every_field_with_redacted_arguments(gateway: Gateway) -> None:
    record = gateway.request(250)
    done = cli("show", record.id, url=gateway.url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"approval:  {record.id}" in out
    assert "status:    pending (15m 00s left)" in out
    assert "tool:      shop__refund (server shop)" in out
    assert "client:    agent (session s9)" in out
    assert "reason:    refunds over 100 need a human" in out
    assert record.args_digest in out
    assert '    "api_key": "<redacted>"' in out
    assert RAW_SECRET not in out


def test_approve_then_a_second_decision_is_refused(gateway: Gateway) -> None:
    record = gateway.request()
    done = cli("approve", record.id, "--comment", "customer called", url=gateway.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"approved {record.id} (shop__refund for agent) as alice"
    stored = gateway.get(record.id)
    assert (stored.status, stored.decided_by, stored.comment) == ("approved", "alice", "customer called")

    again = cli("deny", record.id, url=gateway.url)
    assert again.returncode == 1
    assert again.stdout == ""
    assert f"approval {record.id} was already decided: approved by alice" in again.stderr
    assert gateway.get(record.id).status == "approved"


def test_an_id_starting_with_a_dash_is_an_id(gateway: Gateway) -> None:
    # One token_urlsafe id in 64 starts with "-"; copy a real record under such an id.
    record = replace(gateway.request(), id="-2kM8xVsANrwnKjG")

    def put(_: dict[str, Any] | None) -> tuple[dict[str, Any], None]:
        return record.to_json(), None

    gateway.portal.call(lambda: gateway.service.store.update(record_key(record.id), put, ttl_s=3600))
    done = cli("approve", record.id, "--json", url=gateway.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "approved"
    assert gateway.get(record.id).decided_by == "alice"


def test_deny_with_json_output(gateway: Gateway) -> None:
    record = gateway.request()
    done = cli("deny", record.id, "--json", url=gateway.url)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["id"], answer["status"], answer["decided_by"]) == (record.id, "denied", "alice")
    assert gateway.get(record.id).status == "denied"


def test_an_expired_request_cannot_be_approved(gateway: Gateway) -> None:
    record = gateway.request(timeout_s=60)
    gateway.clock.advance(61)
    done = cli("approve", record.id, "--json", url=gateway.url)
    assert done.returncode == 1
    assert "expired before anyone decided" in done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "approval_expired"
    assert gateway.get(record.id).status == "expired"


def test_refusals_carry_the_gateways_message(gateway: Gateway) -> None:
    finance = gateway.request(approvers=["finance"])
    forbidden = cli("approve", finance.id, url=gateway.url)
    assert forbidden.returncode == 1
    assert f"alice (groups: ops) may not decide approval {finance.id}" in forbidden.stderr
    assert "its approvers are: finance" in forbidden.stderr
    assert gateway.get(finance.id).status == "pending"

    unknown = cli("show", "no-such-id", url=gateway.url)
    assert unknown.returncode == 1
    assert "no approval 'no-such-id'" in unknown.stderr


def test_a_bad_token_is_refused_and_never_echoed(gateway: Gateway) -> None:
    record = gateway.request()
    wrong = "not-the-token-9876543210"
    done = cli("approve", record.id, url=gateway.url, token=wrong)
    assert done.returncode == 1
    assert "unknown admin token" in done.stderr
    assert "INTERLOCK_ADMIN_TOKEN" in done.stderr
    assert wrong not in done.stdout + done.stderr
    missing = cli("list", url=gateway.url, token=None)
    assert missing.returncode == 1 and "missing admin token" in missing.stderr
    flag = cli("list", "--token", wrong, url=gateway.url, token=None)
    assert flag.returncode == 1 and wrong not in flag.stdout + flag.stderr
    assert gateway.get(record.id).status == "pending"


def test_a_gateway_without_admin_users_needs_no_token_on_loopback() -> None:
    with serve(AdminSettings()) as open_gateway:
        record = open_gateway.request()
        done = cli("approve", record.id, url=open_gateway.url, token=None)
        assert done.returncode == 0, done.stderr
        assert open_gateway.get(record.id).decided_by == "local-admin"


def test_the_url_comes_from_the_config_when_not_given(gateway: Gateway, tmp_path: Path) -> None:
    record = gateway.request()
    config = tmp_path / "servers.toml"
    # Only [gateway]/[admin] are read: an upstream secret missing from this shell does not matter.
    config.write_text(
        f'[gateway]\nhost = "0.0.0.0"\nport = {gateway.port}\n\n'
        '[servers.crm]\ntransport = "http"\nurl = "https://crm.example/mcp"\n'
        'headers = { Authorization = "Bearer ${CRM_TOKEN}" }\n'
    )
    done = cli("list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert record.id in done.stdout
    public = tmp_path / "public.toml"
    public.write_text(f'[admin]\npublic_url = "${{UNSET_PUBLIC_URL:-http://127.0.0.1:{gateway.port}/}}"\n')
    assert cli("show", record.id, "--config", str(public)).returncode == 0
    public.write_text('[admin]\npublic_url = "${UNSET_PUBLIC_URL}"\n')
    # The config cannot say where the gateway is, and the CLI says why instead of guessing.
    missing = cli("show", record.id, "--config", str(public))
    assert missing.returncode == 2
    assert "admin.public_url" in missing.stderr and "UNSET_PUBLIC_URL" in missing.stderr


def test_an_unreachable_gateway_exits_3_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = cli("list", "--url", url)
    assert done.returncode == 3
    assert f"cannot reach the gateway at {url}" in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_errors_exit_2() -> None:
    assert cli("approve").returncode == 2
    assert cli("list", "--status", "maybe").returncode == 2
    bad = cli("list", "--url", "127.0.0.1:8080")
    assert bad.returncode == 2 and "expected an http:// or https:// URL" in bad.stderr


def test_a_server_that_is_not_the_gateway_exits_3(tmp_path: Path) -> None:
    def files(*args: Any, **kwargs: Any) -> SimpleHTTPRequestHandler:
        return SimpleHTTPRequestHandler(*args, directory=str(tmp_path), **kwargs)

    server = ThreadingHTTPServer(("127.0.0.1", 0), files)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        done = cli("list", "--url", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert done.returncode == 3
    assert "HTTP 404, not an Interlock admin API answer" in done.stderr
