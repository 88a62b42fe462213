"""The dashboard's panels as HTML: pending approvals, recently decided, upstreams and circuits,
recent calls, and the summary chips in the top bar.

Each panel is one ``<section data-panel id=...>``; the page's script fetches ``/admin/panels``
every few seconds and swaps panels by id, keeping pending cards that are still pending (and
whatever comment is being typed into them).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.approvals import ApprovalRecord
from gateway.observe.recent import RecentCall
from gateway.web.backend import CircuitView, UpstreamView
from gateway.web.decisions import time_left_s
from gateway.web.fmt import ago, clock_time, countdown, duration_ms, json_html
from gateway.web.html import Markup, classes, join, render
from gateway.web.identity import Admin, admin_approvers, refusal

DECIDED_SHOWN = 12
URGENT_S = 120
"""Below this many seconds left, a countdown turns red."""

_FAILURES = frozenset(
    {
        "circuit_open",
        "upstream_rate_limited",
        "upstream_unavailable",
        "upstream_timeout",
        "upstream_error",
        "outcome_unknown",
        "internal_error",
        "protocol_error",
        "invalid_output",
    }
)
_WAITING = frozenset({"input_required", "approval_required"})
_UPSTREAM_OK = frozenset({"up", "ready", "connected"})
_UPSTREAM_BUSY = frozenset({"starting", "restarting", "connecting", "degraded"})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one render shows, read once so every panel agrees."""

    now: float
    pending: list[ApprovalRecord]
    decided: list[ApprovalRecord]
    upstreams: list[UpstreamView]
    circuits: list[CircuitView]
    calls: list[RecentCall]


@dataclass(frozen=True, slots=True)
class Viewer:
    admin: Admin
    csrf: str


def outcome_tone(outcome: str) -> str:
    """``ok`` green, waiting for a human blue, failures of the upstream or gateway red, and
    refusals (guards, humans, the tool's own isError) amber."""
    if outcome == "ok":
        return "ok"
    if outcome in _WAITING:
        return "info"
    return "bad" if outcome in _FAILURES else "warn"


def upstream_tone(status: str) -> str:
    if status in _UPSTREAM_OK:
        return "ok"
    return "warn" if status in _UPSTREAM_BUSY else "bad"


def circuit_tone(state: str) -> str:
    return {"closed": "ok", "half_open": "warn", "half-open": "warn"}.get(state, "bad")


def _table(headers: list[str], rows: list[Markup], empty: str, *, cls: str | None = None) -> Markup:
    """A table, or a one-line note when there are no rows. A header starting with ``#`` is a
    right-aligned number column."""
    if not rows:
        return render('<p class="empty-line">{empty}</p>', empty=empty)
    head = [
        render('<th class="num">{h}</th>', h=h[1:]) if h.startswith("#") else render("<th>{h}</th>", h=h)
        for h in headers
    ]
    return render(
        '<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        "<tbody>{rows}</tbody></table></div>",
        cls=classes("table", cls),
        head=join(head),
        rows=join(rows),
    )


# -- pending approvals -----------------------------------------------------------------------------


def pending_panel(snap: Snapshot, viewer: Viewer) -> Markup:
    cards = [approval_card(record, snap.now, viewer, back="list") for record in snap.pending]
    if not cards:
        cards = [
            Markup(
                '<div class="empty" data-key="empty"><strong>Nothing waits for a decision.</strong>'
                "<span>New requests appear here within seconds.</span></div>"
            )
        ]
    return render(
        '<section class="panel" data-panel id="pending" data-count="{n}">'
        '<h2>Pending approvals <span class="{badge}">{n}</span></h2>'
        '<div class="cards" data-keyed>{cards}</div></section>',
        n=len(snap.pending),
        badge=classes("count", "hot" if snap.pending else None),
        cards=join(cards),
    )


def approval_card(record: ApprovalRecord, now: float, viewer: Viewer, *, back: str) -> Markup:
    left = time_left_s(record, now)
    pending = record.status == "pending"
    return render(
        '<article class="{cls}" id="approval-{id}" data-key="{id}">'
        '<header><a class="tool" href="/admin/approvals/{id}">{tool}</a>'
        '<span class="chip">{server}</span><span class="chip subtle">{channel}</span>{clock}</header>'
        '<dl class="meta">'
        '<dt>Asked by</dt><dd><strong>{client}</strong> <span class="dim">session</span> '
        "<code>{session}</code></dd>"
        '<dt>Rule</dt><dd><code>{rule}</code> <span class="reason">{reason}</span></dd>'
        "<dt>Approvers</dt><dd>{approvers}</dd>"
        '<dt>Requested</dt><dd>{created} <span class="dim">({ago})</span></dd>'
        "</dl>"
        '<pre class="args" aria-label="arguments">{args}</pre>'
        "{action}</article>",
        cls=classes(
            "card", "approval", f"is-{record.status}", "urgent" if pending and left < URGENT_S else None
        ),
        id=record.id,
        tool=record.tool,
        server=record.server,
        channel=record.channel,
        clock=_countdown(left) if pending else _status_badge(record),
        client=record.client,
        session=record.session,
        rule=record.rule,
        reason=record.reason,
        approvers=", ".join(admin_approvers(record)) or "any admin",
        created=clock_time(record.created),
        ago=ago(now - record.created),
        args=json_html(record.args_redacted),
        action=_decide_form(record, viewer, back) if pending else _decision(record),
    )


def _countdown(left: float) -> Markup:
    return render(
        '<span class="{cls}" data-left="{left}" title="time left to decide">{text}</span>',
        cls=classes("countdown", "urgent" if left < URGENT_S else None),
        left=f"{left:.1f}",
        text=countdown(left) + " left",
    )


def _status_badge(record: ApprovalRecord) -> Markup:
    tone = {"approved": "ok", "used": "ok", "denied": "bad", "expired": "muted"}.get(record.status, "info")
    return render('<span class="badge {tone}">{status}</span>', tone=tone, status=record.status)


def _decide_form(record: ApprovalRecord, viewer: Viewer, back: str) -> Markup:
    if refusal(viewer.admin, record) is not None:
        wanted = admin_approvers(record)
        who = ", ".join(wanted) if wanted else "the human at the agent's own client"
        you = viewer.admin.name + (f" ({', '.join(viewer.admin.groups)})" if viewer.admin.groups else "")
        return render(
            '<p class="note locked">Only <strong>{who}</strong> may decide this request; you are {you}.</p>',
            who=who,
            you=you,
        )
    return render(
        '<form class="decide" method="post" action="/admin/approvals/{id}/decide">'
        '<input type="hidden" name="csrf" value="{csrf}">'
        '<input type="hidden" name="back" value="{back}">'
        '<input class="comment" type="text" name="comment" maxlength="2000" autocomplete="off" '
        'placeholder="Comment for the agent and the audit log (optional)" aria-label="comment">'
        '<button class="btn approve" type="submit" name="decision" value="approve">Approve</button>'
        '<button class="btn deny" type="submit" name="decision" value="deny">Deny</button>'
        "</form>",
        id=record.id,
        csrf=viewer.csrf,
        back=back,
    )


def _decision(record: ApprovalRecord) -> Markup:
    if record.status == "expired":
        return Markup('<p class="decision">Expired before anyone decided; the call was refused.</p>')
    return render(
        '<p class="decision">{status} by <strong>{who}</strong> at {at}{comment}</p>',
        status=record.status.capitalize(),
        who=record.decided_by or "unknown",
        at=clock_time(record.decided_at) if record.decided_at is not None else "?",
        comment=render(" — <q>{c}</q>", c=record.comment) if record.comment else "",
    )


# -- recently decided ------------------------------------------------------------------------------


def decided_panel(snap: Snapshot) -> Markup:
    """The latest decisions, latest first: who decided what, when, and what they said."""
    latest = sorted(snap.decided, key=lambda r: r.decided_at or r.expires, reverse=True)[:DECIDED_SHOWN]
    items = [
        render(
            '<li><div class="line">{badge}<span class="mono tool-name">{tool}</span>'
            '<span class="dim">for</span> {client}<span class="by">{by}</span>{at}</div>{comment}</li>',
            badge=_status_badge(record),
            tool=record.tool,
            client=record.client,
            by=render('<span class="dim">by</span> <strong>{who}</strong>', who=record.decided_by)
            if record.decided_by
            else Markup('<span class="dim">nobody decided</span>'),
            at=clock_time(record.decided_at or record.expires),
            comment=render('<q class="said">{c}</q>', c=record.comment) if record.comment else "",
        )
        for record in latest
    ]
    body = (
        render('<ul class="decided">{items}</ul>', items=join(items))
        if items
        else Markup('<p class="empty-line">No decisions yet.</p>')
    )
    return render(
        '<section class="panel" data-panel id="decided"><h2>Recently decided '
        '<span class="count">{n}</span></h2>{body}</section>',
        n=len(latest),
        body=body,
    )


# -- upstreams and circuits ------------------------------------------------------------------------


def upstreams_panel(snap: Snapshot) -> Markup:
    up = sum(1 for u in snap.upstreams if upstream_tone(u.status) == "ok")
    rows = [
        render(
            '<tr><td class="upstream-cell"><span class="dot {tone}"></span><strong>{id}</strong>{req}</td>'
            "<td>{transport}</td>"
            '<td><span class="badge {tone}">{status}</span></td><td class="num">{tools}</td>'
            '<td class="err">{error}</td></tr>',
            tone=upstream_tone(u.status),
            id=u.id,
            req=Markup(' <span class="chip subtle" title="the gateway needs it">required</span>')
            if u.required
            else "",
            transport=u.transport,
            status=u.status,
            tools=u.tools,
            error=u.error or "",
        )
        for u in snap.upstreams
    ]
    table = _table(
        ["Upstream", "Transport", "Status", "#Tools", "Last error"], rows, "No upstream servers configured."
    )
    return render(
        '<section class="panel" data-panel id="upstreams"><h2>Upstreams '
        '<span class="{badge}">{up}/{n} up</span></h2>{table}{circuits}</section>',
        badge=classes("count", "bad" if up < len(snap.upstreams) else "good"),
        up=up,
        n=len(snap.upstreams),
        table=table,
        circuits=_circuits(snap.circuits),
    )


def _circuits(circuits: list[CircuitView]) -> Markup:
    if not circuits:
        return Markup('<h3>Circuits</h3><p class="empty-line">No breaker has tripped or been configured.</p>')
    chips = [
        render(
            '<span class="circuit {tone}"><span class="dot {tone}"></span>{name} <em>{state}</em></span>',
            tone=circuit_tone(c.state),
            name=c.server if c.tool is None else f"{c.server} · {c.tool}",
            state=c.state.replace("_", "-"),
        )
        for c in sorted(circuits, key=lambda c: (circuit_tone(c.state) == "ok", c.server, c.tool or ""))
    ]
    return render('<h3>Circuits</h3><div class="circuits">{chips}</div>', chips=join(chips))


# -- recent calls ----------------------------------------------------------------------------------


def recent_panel(snap: Snapshot) -> Markup:
    failed = sum(1 for c in snap.calls if outcome_tone(c.outcome) == "bad")
    refused = sum(1 for c in snap.calls if outcome_tone(c.outcome) == "warn")
    rows = [
        render(
            '<tr class="{tone}"><td class="nowrap">{at}</td><td class="mono">{tool}</td>'
            '<td class="who-cell">{client}</td>'
            '<td><span class="badge {tone}">{outcome}</span></td><td class="num">{ms}</td></tr>',
            tone=outcome_tone(c.outcome),
            at=clock_time(c.at),
            tool=c.tool,
            client=c.client,
            outcome=c.outcome,
            ms=duration_ms(c.duration_ms),
        )
        for c in snap.calls
    ]
    table = _table(["Time", "Tool", "Client", "Outcome", "#Duration"], rows, "No calls yet.", cls="calls")
    return render(
        '<section class="panel" data-panel id="recent"><h2>Recent calls <span class="count">{n}</span>'
        "{failed}{refused}</h2>{table}</section>",
        n=len(snap.calls),
        failed=render('<span class="count bad">{f} failed</span>', f=failed) if failed else "",
        refused=render('<span class="count warn">{r} refused</span>', r=refused) if refused else "",
        table=table,
    )


# -- the top bar's summary ---------------------------------------------------------------------------


def summary_panel(snap: Snapshot) -> Markup:
    """Counts for the top bar and the tab title (``(3) Interlock admin``), refreshed with the rest."""
    up = sum(1 for u in snap.upstreams if upstream_tone(u.status) == "ok")
    open_circuits = sum(1 for c in snap.circuits if circuit_tone(c.state) != "ok")
    errors = sum(1 for c in snap.calls if outcome_tone(c.outcome) == "bad")
    chips = [
        _chip("hot" if snap.pending else "quiet", f"{len(snap.pending)} pending", "#pending"),
        _chip(
            "bad" if up < len(snap.upstreams) else "good",
            f"{up}/{len(snap.upstreams)} upstreams up",
            "#upstreams",
        ),
        _chip("bad" if open_circuits else "good", _plural(open_circuits, "circuit") + " open", "#upstreams"),
        _chip("bad" if errors else "good", f"{errors} failed of last {len(snap.calls)}", "#recent"),
    ]
    return render(
        '<nav class="summary" data-panel id="summary" data-title="{title}">{chips}</nav>',
        title=(f"({len(snap.pending)}) " if snap.pending else "") + "Interlock admin",
        chips=join(chips),
    )


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _chip(tone: str, text: str, href: str) -> Markup:
    return render('<a class="stat {tone}" href="{href}">{text}</a>', tone=tone, href=href, text=text)
