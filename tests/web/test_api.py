"""The admin REST API against a real approval service on memory and SQLite stores."""

from __future__ import annotations

import anyio
import pytest

from gateway.core.clock import ManualClock
from gateway.observe.recent import RecentCall
from gateway.web.backend import CircuitView, UpstreamView
from tests.calls import tool_call
from tests.state import TEST_LIMIT_S
from tests.web.backend import ALICE_TOKEN, BOB_TOKEN, StandInGateway
from tests.web.conftest import REMOTE, ClientFactory

pytestmark = pytest.mark.anyio

API = "/admin/api/approvals"
ALICE = {"Authorization": f"Bearer {ALICE_TOKEN}"}
BOB = {"Authorization": f"Bearer {BOB_TOKEN}"}


def error_of(body: dict[str, object]) -> dict[str, object]:
    error = body["error"]
    assert isinstance(error, dict) and set(error) >= {"code", "message"}
    return error


# -- reading -------------------------------------------------------------------------------------


async def test_list_newest_first_with_time_left(
    open_gateway: StandInGateway, connect: ClientFactory, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        first = await open_gateway.ask(timeout_s=900)
        clock.advance(60)
        second = await open_gateway.ask("deploy", "rollback", {"service": "api"}, timeout_s=300)
        res = await connect(open_gateway).get(API)
        assert res.status_code == 200
        listed = res.json()["approvals"]
        assert [a["id"] for a in listed] == [second.id, first.id]
        assert listed[0]["time_left_s"] == 300.0 and listed[1]["time_left_s"] == 840.0
        assert listed[0]["tool"] == "deploy__rollback" and listed[0]["args_redacted"] == {"service": "api"}
        assert listed[1] | {"time_left_s": 0} == first.to_json() | {"time_left_s": 0}


async def test_status_filter(
    open_gateway: StandInGateway, connect: ClientFactory, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        approved = await open_gateway.ask(arguments={"amount": 1})
        denied = await open_gateway.ask(arguments={"amount": 2})
        used = await open_gateway.ask(arguments={"amount": 3})
        expired = await open_gateway.ask(arguments={"amount": 4}, timeout_s=10)
        pending = await open_gateway.ask(arguments={"amount": 5}, timeout_s=900)
        await open_gateway.decide(approved.id, True, by="ops")
        await open_gateway.decide(denied.id, False, by="ops")
        await open_gateway.decide(used.id, True, by="ops")
        call = tool_call("crm", "refund", {"amount": 3}, principal="billing-agent", session="sess-7f3a")
        assert await open_gateway.approvals.consume(used.id, call)
        clock.advance(11)

        client = connect(open_gateway)
        for status, record in [
            ("pending", pending),
            ("approved", approved),
            ("denied", denied),
            ("used", used),
            ("expired", expired),
        ]:
            res = await client.get(API, params={"status": status})
            assert res.status_code == 200, res.text
            assert [a["id"] for a in res.json()["approvals"]] == [record.id], status
            assert res.json()["approvals"][0]["status"] == status
        everything = (await client.get(API)).json()["approvals"]
        assert len(everything) == 5

        res = await client.get(API, params={"status": "maybe"})
        assert res.status_code == 400
        assert error_of(res.json())["code"] == "bad_request"
        assert "pending" in str(error_of(res.json())["message"])


async def test_show_and_unknown(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        client = connect(open_gateway)
        res = await client.get(f"{API}/{record.id}")
        assert res.status_code == 200
        assert res.json() == record.to_json() | {"time_left_s": 900.0}

        res = await client.get(f"{API}/nope")
        assert res.status_code == 404
        assert error_of(res.json())["code"] == "not_found"


# -- deciding ------------------------------------------------------------------------------------


async def test_approve_with_comment_goes_through_the_gateway(
    users_gateway: StandInGateway, connect: ClientFactory
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await users_gateway.ask()
        res = await connect(users_gateway).post(
            f"{API}/{record.id}/approve", json={"comment": "  checked the order  "}, headers=ALICE
        )
        assert res.status_code == 200, res.text
        body = res.json()
        assert (body["status"], body["decided_by"], body["comment"]) == (
            "approved",
            "alice",
            "checked the order",
        )
        assert [(d.approval_id, d.approve, d.by) for d in users_gateway.decisions] == [
            (record.id, True, "alice")
        ]
        assert (await users_gateway.approvals.get(record.id)).status == "approved"


async def test_deny_without_body(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        res = await connect(open_gateway).post(f"{API}/{record.id}/deny")
        assert res.status_code == 200, res.text
        assert (res.json()["status"], res.json()["decided_by"], res.json()["comment"]) == (
            "denied",
            "local-admin",
            None,
        )


async def test_second_decision_conflicts(users_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await users_gateway.ask()
        client = connect(users_gateway)
        assert (await client.post(f"{API}/{record.id}/approve", headers=ALICE)).status_code == 200
        res = await client.post(f"{API}/{record.id}/deny", headers=ALICE)
        assert res.status_code == 409
        error = error_of(res.json())
        assert error["code"] == "conflict"
        assert error["details"] == {
            "status": "approved",
            "decided_by": "alice",
            "decided_at": (await users_gateway.approvals.get(record.id)).decided_at,
            "comment": None,
        }
        assert "approved by alice" in str(error["message"])
        assert (await users_gateway.approvals.get(record.id)).status == "approved"


async def test_expired_request_cannot_be_decided(
    open_gateway: StandInGateway, connect: ClientFactory, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask(timeout_s=60)
        clock.advance(60)
        res = await connect(open_gateway).post(f"{API}/{record.id}/approve")
        assert res.status_code == 409
        error = error_of(res.json())
        assert error["code"] == "approval_expired"
        assert error["details"]["status"] == "expired"  # type: ignore[index]
        assert (await open_gateway.approvals.get(record.id)).status == "expired"


async def test_unknown_approval_is_not_found(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        res = await connect(open_gateway).post(f"{API}/missing/approve")
        assert res.status_code == 404
        assert error_of(res.json())["code"] == "not_found"
        assert open_gateway.decisions == []


# -- who may call, and who may decide ---------------------------------------------------------------


async def test_token_required_when_admins_are_configured(
    users_gateway: StandInGateway, connect: ClientFactory
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await users_gateway.ask()
        client = connect(users_gateway)  # from loopback: no anonymous access once users exist
        res = await client.get(API)
        assert res.status_code == 401
        assert res.headers["www-authenticate"].startswith("Bearer")
        assert error_of(res.json())["code"] == "unauthorized"
        for bad in ("Bearer wrong-token-0123456789", f"Basic {ALICE_TOKEN}", f"Bearer {ALICE_TOKEN}x"):
            res = await client.post(f"{API}/{record.id}/approve", headers={"Authorization": bad})
            assert res.status_code == 401, bad
        assert users_gateway.decisions == []
        assert (await client.get(API, headers=ALICE)).status_code == 200
        assert (await connect(users_gateway, peer=REMOTE).get(API, headers=BOB)).status_code == 200


async def test_open_mode_is_loopback_only(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        res = await connect(open_gateway, peer=REMOTE).post(f"{API}/{record.id}/approve")
        assert res.status_code == 403
        assert "[[admin.users]]" in str(error_of(res.json())["message"])
        # A DNS-rebinding page reaches 127.0.0.1 under its own name: the Host gives it away.
        rebound = connect(open_gateway, base_url="http://evil.example:8080")
        res = await rebound.post(f"{API}/{record.id}/approve")
        assert res.status_code == 403
        assert (await rebound.get(API)).status_code == 403
        assert open_gateway.decisions == []
        for base in ("http://localhost:8080", "http://[::1]:8080"):
            assert (await connect(open_gateway, base_url=base).get(API)).status_code == 200


async def test_approvers_restrict_who_decides(users_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        by_group = await users_gateway.ask(approvers=("ops",))
        by_name = await users_gateway.ask(approvers=("bob",))
        client_only = await users_gateway.ask(approvers=("client",))
        client = connect(users_gateway)

        res = await client.post(f"{API}/{by_group.id}/approve", headers=BOB)
        assert res.status_code == 403
        error = error_of(res.json())
        assert error["code"] == "forbidden" and "ops" in str(error["message"])
        assert (await client.post(f"{API}/{by_group.id}/approve", headers=ALICE)).status_code == 200

        assert (await client.post(f"{API}/{by_name.id}/deny", headers=ALICE)).status_code == 403
        assert (await client.post(f"{API}/{by_name.id}/deny", headers=BOB)).status_code == 200

        res = await client.post(f"{API}/{client_only.id}/approve", headers=ALICE)
        assert res.status_code == 403
        assert "agent's own client" in str(error_of(res.json())["message"])
        assert (await users_gateway.approvals.get(client_only.id)).status == "pending"
        assert [d.by for d in users_gateway.decisions] == ["alice", "bob"]


async def test_local_admin_has_no_groups(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask(approvers=("ops", "client"))
        res = await connect(open_gateway).post(f"{API}/{record.id}/approve")
        assert res.status_code == 403
        assert "local-admin" in str(error_of(res.json())["message"])


# -- what a browser page could send ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({"Content-Type": "text/plain"}, b'{"comment": "x"}'),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"comment=x"),
        ({"Content-Type": "multipart/form-data; boundary=b"}, b"--b--"),
        ({}, b'{"comment": "x"}'),
    ],
)
async def test_bodies_must_be_json(
    open_gateway: StandInGateway, connect: ClientFactory, headers: dict[str, str], content: bytes
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        res = await connect(open_gateway).post(f"{API}/{record.id}/approve", headers=headers, content=content)
        assert res.status_code == 415
        assert error_of(res.json())["code"] == "unsupported_media_type"
        assert (await open_gateway.approvals.get(record.id)).status == "pending"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'["comment"]',
        b'{"comment": 5}',
        b'{"comment": "x", "approve": true}',
        b'{"comment": "' + b"x" * 2001 + b'"}',
    ],
)
async def test_bad_json_bodies(open_gateway: StandInGateway, connect: ClientFactory, content: bytes) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        res = await connect(open_gateway).post(
            f"{API}/{record.id}/deny", headers={"Content-Type": "application/json"}, content=content
        )
        assert res.status_code == 400, res.text
        assert error_of(res.json())["code"] == "bad_request"
        assert open_gateway.decisions == []


async def test_cross_origin_writes_are_refused(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        client = connect(open_gateway)
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "http://127.0.0.1:9999"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:8080"},
        ):
            res = await client.post(f"{API}/{record.id}/approve", headers=headers)
            assert res.status_code == 403, headers
            assert error_of(res.json())["code"] == "forbidden"
        assert open_gateway.decisions == []
        res = await client.post(f"{API}/{record.id}/approve", headers={"Origin": "http://127.0.0.1:8080"})
        assert res.status_code == 200


async def test_public_url_origin_is_this_gateway(
    users_gateway: StandInGateway, connect: ClientFactory
) -> None:
    """Behind a TLS proxy that rewrites Host, the page's origin is the public URL."""
    with anyio.fail_after(TEST_LIMIT_S):
        users_gateway.admin = users_gateway.admin.model_copy(
            update={"public_url": "https://admin.example.com"}
        )
        record = await users_gateway.ask()
        headers = ALICE | {"Origin": "https://admin.example.com"}
        res = await connect(users_gateway, base_url="http://10.0.0.5:8080").post(
            f"{API}/{record.id}/approve", headers=headers
        )
        assert res.status_code == 200, res.text


# -- status and headers ----------------------------------------------------------------------------


async def test_status(open_gateway: StandInGateway, connect: ClientFactory, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        open_gateway.upstream_views = [
            UpstreamView("crm", "http", "up", True, 3),
            UpstreamView("db", "stdio", "down", False, 0, "exit 1"),
        ]
        open_gateway.circuit_views = [CircuitView("db", None, "open")]
        for n in range(3):
            open_gateway.calls.add(
                RecentCall(clock.wall() + n, "crm", "crm__get", "agent", "ok", 5.0, f"r{n}")
            )
        await open_gateway.ask()
        res = await connect(open_gateway).get("/admin/api/status", params={"limit": 2})
        assert res.status_code == 200
        body = res.json()
        assert body["approvals"] == {"pending": 1}
        assert body["public_url"] == "http://127.0.0.1:8080"
        assert body["upstreams"][1] == {
            "id": "db",
            "transport": "stdio",
            "status": "down",
            "required": False,
            "tools": 0,
            "error": "exit 1",
        }
        assert body["circuits"] == [{"server": "db", "tool": None, "state": "open"}]
        assert [c["request_id"] for c in body["recent_calls"]] == ["r2", "r1"]
        res = await connect(open_gateway).get("/admin/api/status", params={"limit": "lots"})
        assert res.status_code == 400


async def test_security_headers(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        for res in (await connect(open_gateway).get(API), await connect(open_gateway, peer=REMOTE).get(API)):
            assert res.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in res.headers["content-security-policy"]
            assert res.headers["referrer-policy"] == "no-referrer"
            assert res.headers["cache-control"] == "no-store"
            assert res.headers["content-type"] == "application/json"


async def test_unknown_endpoint_answers_in_the_error_shape(
    open_gateway: StandInGateway, connect: ClientFactory
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        res = await connect(open_gateway).get("/admin/api/nothing/here")
        assert res.status_code == 404
        assert error_of(res.json())["code"] == "not_found"


async def test_an_unreachable_store_is_a_503_and_decides_nothing(
    open_gateway: StandInGateway, connect: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.state.base import StoreUnavailable

    async def down(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(open_gateway.approvals.store, "get", down)
    monkeypatch.setattr(open_gateway.approvals.store, "update", down)
    client = connect(open_gateway)
    listed = await client.get(API)
    decided = await client.post(f"{API}/some-id/approve", json={})
    for res in (listed, decided):
        assert res.status_code == 503
        assert res.json()["error"]["code"] == "state_store_unavailable"
    assert open_gateway.decisions == []
