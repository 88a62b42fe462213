"""A tiny HTML template helper whose default is escaping.

Every value put into a template is escaped unless it is already ``Markup`` (HTML this module or a
template built). Escaping by default is the point: argument values in an approval come from an
agent, which may have read them from anywhere, and the page is shown to the humans who decide.
"""

from __future__ import annotations

import html
from collections.abc import Iterable


class Markup(str):
    """HTML that is safe to put into a page as it is (built from templates and escaped values)."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """``value`` as HTML text: escaped (quotes too, so it is safe in attributes), unless Markup."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def render(template: str, /, **values: object) -> Markup:
    """``template`` with ``{name}`` placeholders filled, each value escaped unless it is Markup."""
    return Markup(template.format_map({name: esc(value) for name, value in values.items()}))


def join(parts: Iterable[Markup], sep: str = "") -> Markup:
    return Markup(sep.join(esc(part) for part in parts))


def classes(*names: str | None) -> str:
    """A ``class`` attribute value from the names that are set."""
    return " ".join(name for name in names if name)
