"""Whole pages: the dashboard, one approval, the login form and error pages, in one layout."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.approvals import ApprovalRecord
from gateway.web.assets import asset_url
from gateway.web.fmt import clock_time
from gateway.web.html import Markup, render
from gateway.web.panels import (
    Snapshot,
    Viewer,
    approval_card,
    decided_panel,
    pending_panel,
    recent_panel,
    summary_panel,
    upstreams_panel,
)

REFRESH_MS = 2500
NOTHING = Markup("")


@dataclass(frozen=True, slots=True)
class Flash:
    """A one-time message after a redirect: ``ok`` (decided), ``warn`` (conflict), ``bad``."""

    tone: str
    text: str


def layout(title: str, body: Markup, *, refresh: str | None = None, topbar: Markup = NOTHING) -> Markup:
    return render(
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="dark">'
        "<title>{title}</title>"
        '<link rel="icon" href="{icon}" type="image/svg+xml">'
        '<link rel="stylesheet" href="{css}">'
        '<script src="{js}" defer></script>'
        "</head>"
        '<body data-refresh="{refresh}" data-refresh-ms="{ms}">{topbar}{body}</body></html>',
        title=title,
        icon=asset_url("favicon.svg"),
        css=asset_url("admin.css"),
        js=asset_url("admin.js"),
        refresh=refresh or "",
        ms=REFRESH_MS,
        topbar=topbar,
        body=body,
    )


def topbar(viewer: Viewer | None, summary: Markup = NOTHING) -> Markup:
    who = Markup("")
    if viewer is not None:
        admin = viewer.admin
        detail = "loopback, no admin users" if admin.local else ", ".join(admin.groups)
        logout = (
            ""
            if admin.local
            else render(
                '<form method="post" action="/admin/logout" class="logout">'
                '<input type="hidden" name="csrf" value="{csrf}">'
                '<button class="btn ghost">Log out</button></form>',
                csrf=viewer.csrf,
            )
        )
        who = render(
            '<div class="who"><span class="user">{name}</span>{detail}{logout}</div>',
            name=admin.name,
            detail=render('<span class="dim">{d}</span>', d=detail) if detail else "",
            logout=logout,
        )
    return render(
        '<header class="topbar"><a class="brand" href="/admin"><span class="mark" aria-hidden="true"></span>'
        "Interlock <span>admin</span></a>{summary}{who}</header>",
        summary=summary,
        who=who,
    )


def flash_banner(flash: Flash | None) -> Markup:
    if flash is None:
        return Markup("")
    return render('<div class="flash {tone}" role="status">{text}</div>', tone=flash.tone, text=flash.text)


def dashboard(snap: Snapshot, viewer: Viewer, flash: Flash | None) -> Markup:
    body = render(
        '{flash}<div class="banner-slot" id="connection"></div>'
        '<main class="grid"><div class="col-main">{pending}</div>'
        '<div class="col-side">{upstreams}{recent}{decided}</div></main>'
        '<footer class="foot">Refreshes every {secs} s · <span id="updated">rendered {now}</span></footer>',
        flash=flash_banner(flash),
        pending=pending_panel(snap, viewer),
        decided=decided_panel(snap),
        upstreams=upstreams_panel(snap),
        recent=recent_panel(snap),
        secs=f"{REFRESH_MS / 1000:g}",
        now=clock_time(snap.now),
    )
    title = (f"({len(snap.pending)}) " if snap.pending else "") + "Interlock admin"
    return layout(title, body, refresh="/admin/panels", topbar=topbar(viewer, summary_panel(snap)))


def panels(snap: Snapshot, viewer: Viewer) -> Markup:
    """The fragment the page's script swaps in: every panel, by id."""
    return Markup(
        summary_panel(snap)
        + pending_panel(snap, viewer)
        + decided_panel(snap)
        + upstreams_panel(snap)
        + recent_panel(snap)
    )


def approval_page(record: ApprovalRecord, now: float, viewer: Viewer, flash: Flash | None) -> Markup:
    body = render(
        '{flash}<main class="single"><p class="crumb"><a href="/admin">← All approvals</a></p>'
        '<div class="cards">{card}</div></main>',
        flash=flash_banner(flash),
        card=approval_card(record, now, viewer, back="detail"),
    )
    return layout(f"{record.tool} · approval · Interlock", body, topbar=topbar(viewer))


def login_page(next_path: str, error: str | None = None) -> Markup:
    body = render(
        '<main class="login"><form class="card login-card" method="post" action="/admin/login">'
        "<h1>Sign in</h1>"
        '<p class="dim">Use your admin token from <code>[[admin.users]]</code> in servers.toml. '
        "Client API keys do not work here.</p>"
        "{error}"
        '<input type="hidden" name="next" value="{next}">'
        '<label for="token">Admin token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>'
        '<button class="btn approve wide" type="submit">Sign in</button></form></main>',
        error=render('<div class="flash bad" role="alert">{e}</div>', e=error) if error else "",
        next=next_path,
    )
    return layout("Sign in · Interlock admin", body, topbar=topbar(None))


def error_page(status: int, message: str) -> Markup:
    body = render(
        '<main class="login"><div class="card login-card"><h1>{status}</h1><p>{message}</p>'
        '<p><a href="/admin">Back to the dashboard</a></p></div></main>',
        status=status,
        message=message,
    )
    return layout(f"{status} · Interlock admin", body, topbar=topbar(None))
