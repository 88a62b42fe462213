"""Small formatters the admin pages share: times, durations, and arguments as highlighted JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from gateway.approvals import REDACTED
from gateway.web.html import Markup, esc, render


def clock_time(epoch: float) -> Markup:
    """A ``<time>`` in UTC; the page's script shows it in the viewer's own time zone."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return render(
        '<time datetime="{iso}" data-epoch="{epoch}" title="{iso}">{text}</time>',
        iso=moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        epoch=f"{epoch:.3f}",
        text=moment.strftime("%H:%M:%S"),
    )


def countdown(seconds: float) -> str:
    """``4m 05s``, ``1h 02m``, ``2d 03h``, ``12s``: what a human deciding reads at a glance."""
    s = max(0, int(seconds))
    days, rest = divmod(s, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def duration_ms(ms: float) -> str:
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 10_000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s"


def json_html(value: Any, depth: int = 0) -> Markup:
    """Pretty JSON (2-space indent) with a span per token kind, every piece escaped.

    The values come from the agent; nothing in them may become markup, so each token goes
    through ``esc`` and only this function's own spans are trusted."""
    pad, close = "  " * (depth + 1), "  " * depth
    if isinstance(value, dict):
        if not value:
            return Markup('<span class="j-p">{}</span>')
        items = [
            Markup(f'{pad}<span class="j-k">{esc(_quoted(str(key)))}</span>: {json_html(item, depth + 1)}')
            for key, item in value.items()
        ]
        return Markup("{\n" + ",\n".join(items) + f"\n{close}}}")
    if isinstance(value, list | tuple):
        if not value:
            return Markup('<span class="j-p">[]</span>')
        items = [Markup(f"{pad}{json_html(item, depth + 1)}") for item in value]
        return Markup("[\n" + ",\n".join(items) + f"\n{close}]")
    if value == REDACTED and isinstance(value, str):
        return render('<span class="j-r" title="redacted by the gateway">{v}</span>', v=_quoted(value))
    if isinstance(value, str):
        return render('<span class="j-s">{v}</span>', v=_quoted(value))
    if isinstance(value, bool) or value is None:
        return render('<span class="j-b">{v}</span>', v=json.dumps(value))
    if isinstance(value, int | float):
        return render('<span class="j-n">{v}</span>', v=json.dumps(value))
    return render('<span class="j-s">{v}</span>', v=_quoted(str(value)))


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
