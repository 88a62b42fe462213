"""Browser-facing defences shared by the admin UI and REST API: response headers and the
same-origin check on every state-changing request.

The admin plane decides whether destructive calls run, so it assumes a hostile page may be open in
the same browser: it must not be framed (clickjacking an Approve button), must not run injected
script (CSP without inline script), and must refuse writes that another origin started.
"""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

R = TypeVar("R", bound=Response)


def harden(response: R, *, cache: str = "no-store") -> R:
    """Add the security headers; pages and API answers are never cached (they hold approvals)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", cache)
    return response


def _origin_authority(url: str) -> str:
    """``host[:port]`` of an origin or URL, lowercased, without its scheme's default port."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def _host_authority(host: str) -> str:
    host = host.strip().lower()
    for default in (":80", ":443"):
        if host.endswith(default):
            return host.removesuffix(default)
    return host


def cross_origin_refusal(request: Request, public_url: str | None) -> str | None:
    """Why a state-changing request must be refused as cross-origin, or None.

    Browsers say who started a request in two ways, and both are read:

    - ``Sec-Fetch-Site`` (set by the browser, never by a page): only ``same-origin`` (or ``none``,
      a request the user started) passes.
    - ``Origin``: must be this gateway, as the request's ``Host`` names it or as ``public_url``
      does (behind a proxy that rewrites Host). Our own ``Referrer-Policy: no-referrer`` makes
      browsers send ``Origin: null`` on our own form posts, so ``null`` passes only when
      ``Sec-Fetch-Site`` vouches for the request; without it, ``null`` is refused.

    Clients that are not browsers send neither header and pass: they hold a bearer token, or are
    on loopback in open mode with a loopback Host (checked elsewhere), and no page drives them."""
    if request.method in SAFE_METHODS:
        return None
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"refused a {site} request: the admin plane accepts changes only from its own pages"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    if origin == "null":
        if site == "same-origin":
            return None
        return "refused a request with an opaque (null) Origin"
    host = request.headers.get("host", "")
    presented = _origin_authority(origin)
    # The scheme is not compared: behind a TLS-terminating proxy the page is https:// while the
    # request reaches us as http://; the authority (host and port) is what names this gateway.
    if presented and presented == _host_authority(host):
        return None
    if public_url and presented == _origin_authority(public_url):
        return None
    return f"refused a request from origin {origin!r}: it is not this gateway ({host or 'no Host'})"
