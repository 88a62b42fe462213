"""The admin web UI over HTTP: sessions, login, CSRF, the decide form, escaping and the panels."""

from __future__ import annotations

import base64
import json
import re

import anyio
import httpx2
import pytest

from gateway.config import AdminSettings, AdminUser
from gateway.core.clock import ManualClock
from gateway.web.assets import ASSETS, asset_url
from gateway.web.sessions import SESSION_TTL_S
from tests.state import TEST_LIMIT_S
from tests.web.backend import ALICE_TOKEN, BOB_TOKEN, StandInGateway
from tests.web.conftest import REMOTE, ClientFactory
from tests.web.demo import demo_gateway

pytestmark = pytest.mark.anyio

HOSTILE = "<script>alert('pwned')</script>"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def open_page(client: httpx2.AsyncClient, path: str = "/admin") -> str:
    res = await client.get(path)
    assert res.status_code == 200, res.text
    return res.text


async def log_in(client: httpx2.AsyncClient, token: str, next_path: str = "/admin") -> httpx2.Response:
    return await client.post("/admin/login", data={"token": token, "next": next_path})


# -- open mode (no admin users) ---------------------------------------------------------------------


async def test_loopback_dashboard_needs_no_login(
    open_gateway: StandInGateway, connect: ClientFactory
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        await open_gateway.ask(arguments={"order_id": "O-1042", "amount": 250, "api_key": "sk-live-1"})
        res = await connect(open_gateway).get("/admin")
        assert res.status_code == 200
        cookie = res.headers["set-cookie"]
        for attribute in ("interlock_admin=", "HttpOnly", "Path=/admin", "SameSite=strict"):
            assert attribute in cookie
        html = res.text
        assert "<title>(1) Interlock admin</title>" in html
        assert "crm__refund" in html and "billing-agent" in html and "sess-7f3a" in html
        assert "refunds-over-100" in html and "args.amount &gt; 100" in html
        assert '<span class="j-n">250</span>' in html
        assert "sk-live-1" not in html and "&lt;redacted&gt;" in html
        assert 'value="approve"' in html and 'value="deny"' in html
        assert "local-admin" in html and "Log out" not in html
        assert res.headers["x-frame-options"] == "DENY"
        assert "script-src 'self'" in res.headers["content-security-policy"]


async def test_open_mode_refuses_other_machines(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        res = await connect(open_gateway, peer=REMOTE).get("/admin")
        assert res.status_code == 403
        assert "[[admin.users]]" in res.text
        res = await connect(open_gateway, base_url="http://rebind.example:8080").get("/admin")
        assert res.status_code == 403


async def test_approve_by_form(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        client = connect(open_gateway)
        csrf = csrf_of(await open_page(client))
        res = await client.post(
            f"/admin/approvals/{record.id}/decide",
            data={"csrf": csrf, "decision": "approve", "comment": "refund is fine", "back": "list"},
        )
        assert res.status_code == 303 and res.headers["location"] == "/admin"
        decided = await open_gateway.approvals.get(record.id)
        assert (decided.status, decided.decided_by, decided.comment) == (
            "approved",
            "local-admin",
            "refund is fine",
        )
        assert [(d.approval_id, d.approve) for d in open_gateway.decisions] == [(record.id, True)]

        html = await open_page(client)
        assert "Approved crm__refund" in html and 'class="flash ok"' in html
        assert "Nothing waits for a decision" in html
        assert "refund is fine" in html  # the recently decided panel
        assert "Approved crm__refund" not in await open_page(client)  # a flash shows once


async def test_deny_from_the_approval_page(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        client = connect(open_gateway)
        html = await open_page(client, f"/admin/approvals/{record.id}")
        assert 'name="back" value="detail"' in html
        res = await client.post(
            f"/admin/approvals/{record.id}/decide",
            data={"csrf": csrf_of(html), "decision": "deny", "back": "detail"},
        )
        assert res.headers["location"] == f"/admin/approvals/{record.id}"
        html = await open_page(client, f"/admin/approvals/{record.id}")
        assert "Denied crm__refund" in html and "Denied by <strong>local-admin</strong>" in html
        assert 'value="approve"' not in html
        assert (await client.get("/admin/approvals/unknown-id")).status_code == 404


async def test_csrf_token_is_required(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        client = connect(open_gateway)
        other = connect(open_gateway)
        mine, theirs = csrf_of(await open_page(client)), csrf_of(await open_page(other))
        assert mine != theirs
        for form in (
            {"decision": "approve"},
            {"decision": "approve", "csrf": ""},
            {"decision": "approve", "csrf": mine[:-2] + "xx"},
            {"decision": "approve", "csrf": theirs},  # a token of another session
        ):
            res = await client.post(f"/admin/approvals/{record.id}/decide", data=form)
            assert res.status_code == 303
            assert "Nothing was decided" in await open_page(client)
        # The right token, but no session cookie: a fresh session, whose token differs.
        res = await connect(open_gateway).post(
            f"/admin/approvals/{record.id}/decide", data={"decision": "approve", "csrf": mine}
        )
        assert res.status_code == 303
        assert (await open_gateway.approvals.get(record.id)).status == "pending"
        assert open_gateway.decisions == []


async def test_cross_origin_form_is_refused(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        client = connect(open_gateway)
        csrf = csrf_of(await open_page(client))
        form = {"decision": "approve", "csrf": csrf}
        for headers in (
            {"Origin": "http://evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Origin": "null"},
        ):
            res = await client.post(f"/admin/approvals/{record.id}/decide", data=form, headers=headers)
            assert res.status_code == 403, headers
        assert open_gateway.decisions == []
        # Our own page under Referrer-Policy: no-referrer: Origin null, vouched for by Sec-Fetch-Site.
        res = await client.post(
            f"/admin/approvals/{record.id}/decide",
            data=form,
            headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        )
        assert res.status_code == 303
        assert (await open_gateway.approvals.get(record.id)).status == "approved"


async def test_conflict_and_expiry_are_explained(
    open_gateway: StandInGateway, connect: ClientFactory, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        late = await open_gateway.ask(arguments={"amount": 900}, timeout_s=30)
        client = connect(open_gateway)
        csrf = csrf_of(await open_page(client))
        await open_gateway.decide(record.id, False, by="alice", comment="no")  # someone was faster
        await client.post(f"/admin/approvals/{record.id}/decide", data={"csrf": csrf, "decision": "approve"})
        html = await open_page(client)
        assert 'class="flash warn"' in html and "already decided: denied by alice" in html

        clock.advance(30)
        await client.post(f"/admin/approvals/{late.id}/decide", data={"csrf": csrf, "decision": "approve"})
        html = await open_page(client)
        assert "it expired before anyone decided" in html
        assert (await open_gateway.approvals.get(late.id)).status == "expired"


# -- escaping ----------------------------------------------------------------------------------------


async def test_hostile_values_are_shown_as_text(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask(
            tool='x"><img src=x onerror=alert(1)>',
            arguments={"note": HOSTILE, "<b>key</b>": "\"'><svg onload=alert(2)>"},
            client="<i>agent</i>",
            session='"><script>alert(3)</script>',
            rule="r<script>",
            reason="</pre><script>alert(4)</script>",
        )
        await open_gateway.decide(record.id, False, by="local-admin", comment="<script>alert(5)</script>")
        await open_gateway.ask(arguments={"note": HOSTILE}, client="<i>agent</i>")
        client = connect(open_gateway)
        for html in (
            await open_page(client),
            await open_page(client, "/admin/panels"),
            await open_page(client, f"/admin/approvals/{record.id}"),
        ):
            assert (
                "<script>alert" not in html
                and "<img" not in html
                and "<svg" not in html
                and "<i>" not in html
            )
            assert html.count("<script") <= 1  # only the page's own script, by URL
            assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html
            assert "&lt;i&gt;agent&lt;/i&gt;" in html
        assert html.count("<script") == 1 and f'<script src="{asset_url("admin.js")}"' in html


# -- users, login and sessions ----------------------------------------------------------------------


async def test_login_flow(users_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await users_gateway.ask()
        client = connect(users_gateway)
        res = await client.get(f"/admin/approvals/{record.id}")
        assert res.status_code == 303
        assert res.headers["location"] == f"/admin/login?next=/admin/approvals/{record.id}"
        assert (await client.get("/admin/panels")).status_code == 401  # the script's poll: no redirect

        form = await open_page(client, "/admin/login")
        assert 'type="password"' in form
        res = await log_in(client, "not-a-real-token-at-all")
        assert res.status_code == 401 and "Unknown admin token" in res.text
        assert "interlock_admin" not in res.headers.get("set-cookie", "")

        res = await log_in(client, ALICE_TOKEN, f"/admin/approvals/{record.id}")
        assert res.status_code == 303 and res.headers["location"] == f"/admin/approvals/{record.id}"
        assert "HttpOnly" in res.headers["set-cookie"] and "SameSite=strict" in res.headers["set-cookie"]
        html = await open_page(client)
        assert '<span class="user">alice</span>' in html and "crm__refund" in html

        res = await client.post("/admin/logout", data={"csrf": csrf_of(html)})
        assert res.status_code == 303 and res.headers["location"] == "/admin/login"
        assert (await client.get("/admin")).status_code == 303


async def test_login_never_redirects_elsewhere(users_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        for target in ("https://evil.example/", "//evil.example", "/admin/../elsewhere", "/adminx"):
            res = await log_in(connect(users_gateway), BOB_TOKEN, target)
            assert res.status_code == 303 and res.headers["location"] == "/admin", target


async def test_sessions_end(
    users_gateway: StandInGateway, connect: ClientFactory, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        client = connect(users_gateway)
        await log_in(client, ALICE_TOKEN)
        assert (await client.get("/admin")).status_code == 200

        clock.advance(SESSION_TTL_S)
        assert (await client.get("/admin")).status_code == 303  # expired

        await log_in(client, ALICE_TOKEN)
        assert (await client.get("/admin")).status_code == 200
        # Rotating alice's token ends her sessions: the key they were signed with is gone.
        users_gateway.admin = AdminSettings(
            users=[AdminUser(name="alice", token="alice-rotated-token-000000000", groups=["ops"])]  # type: ignore[arg-type]
        )
        assert (await client.get("/admin")).status_code == 303


async def test_tampered_session_cookie(users_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        client = connect(users_gateway)
        res = await log_in(client, BOB_TOKEN)
        cookie = res.cookies["interlock_admin"]
        body, mac = cookie.split(".")
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        forged_body = (
            base64.urlsafe_b64encode(json.dumps(doc | {"u": "alice"}).encode()).rstrip(b"=").decode()
        )
        for value in (f"{forged_body}.{mac}", f"{body}.{mac[:-3]}abc", "garbage", f"{body}."):
            forged = connect(users_gateway, cookies={"interlock_admin": value})
            assert (await forged.get("/admin")).status_code == 303, value


async def test_approvers_shown_and_enforced(users_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await users_gateway.ask(approvers=("ops",))
        bob = connect(users_gateway)
        await log_in(bob, BOB_TOKEN)
        html = await open_page(bob)
        assert "Only <strong>ops</strong> may decide this request; you are bob (support)" in html
        assert f'action="/admin/approvals/{record.id}/decide"' not in html
        # A hand-made POST with a valid token is still refused.
        await bob.post(
            f"/admin/approvals/{record.id}/decide", data={"csrf": csrf_of(html), "decision": "approve"}
        )
        assert "bob (groups: support) may not decide" in await open_page(bob)
        assert (await users_gateway.approvals.get(record.id)).status == "pending"

        alice = connect(users_gateway)
        await log_in(alice, ALICE_TOKEN)
        html = await open_page(alice)
        await alice.post(
            f"/admin/approvals/{record.id}/decide", data={"csrf": csrf_of(html), "decision": "approve"}
        )
        assert (await users_gateway.approvals.get(record.id)).decided_by == "alice"


async def test_open_mode_login_page_redirects(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        res = await connect(open_gateway).get("/admin/login")
        assert res.status_code == 303 and res.headers["location"] == "/admin"


# -- panels, assets and the demo ---------------------------------------------------------------------


async def test_panels_fragment(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        record = await open_gateway.ask()
        html = await open_page(connect(open_gateway), "/admin/panels")
        assert "<html" not in html
        for panel in ("summary", "pending", "decided", "upstreams", "recent"):
            assert f'data-panel id="{panel}"' in html
        assert f'data-key="{record.id}"' in html
        assert 'data-title="(1) Interlock admin"' in html


async def test_static_assets(open_gateway: StandInGateway, connect: ClientFactory) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        client = connect(open_gateway, peer=REMOTE)  # assets hold nothing secret
        for name, asset in ASSETS.items():
            res = await client.get(asset_url(name))
            assert res.status_code == 200
            assert res.content == asset.body
            assert res.headers["content-type"].startswith(asset.media_type.split(";")[0])
            assert "immutable" in res.headers["cache-control"]
        assert (await client.get("/admin/static/nope.js")).status_code == 404


async def test_demo_dashboard_renders(clock: ManualClock, connect: ClientFactory) -> None:
    """The data behind docs/img/admin.png: keeps scripts/screenshot_admin.py working."""
    with anyio.fail_after(TEST_LIMIT_S):
        html = await open_page(connect(await demo_gateway(clock, AdminSettings())))
        assert "3 pending" in html and "3/5 upstreams up" in html and "postgres__delete_rows" in html
