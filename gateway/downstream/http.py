"""The HTTP face of the gateway: ``/mcp`` (both eras, one endpoint), health, readiness, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import GatewaySettings
from gateway.downstream.auth import ApiKeys, AuthMiddleware
from gateway.downstream.edge import McpEdge
from gateway.downstream.server import GatewayServer

_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
_WILDCARD_BINDS = ("0.0.0.0", "::", "")


_OWS = (b" ", b"\t")


class TrimHeaderWhitespace:
    """RFC 9110 §5.5: a field value excludes leading and trailing whitespace (OWS).

    h11 strips it while parsing; httptools, the faster parser uvicorn prefers when installed, does
    not, and the SDK compares ``Mcp-Name`` and friends byte for byte. Trimmed here, once, for every
    route, and only when some value needs it (a scan of a dozen headers costs about a microsecond).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            if any(v[:1] in _OWS or v[-1:] in _OWS for _, v in headers):
                scope = {**scope, "headers": [(k, v.strip(b" \t")) for k, v in headers]}
        await self.app(scope, receive, send)


def transport_security(settings: GatewaySettings) -> TransportSecuritySettings:
    """DNS-rebinding protection, always on: Host and Origin must name this gateway.

    The SDK leaves it off for a hand-built session manager, so it is set explicitly here.
    """
    hosts = list(_LOOPBACK_HOSTS)
    origins = list(_LOOPBACK_ORIGINS)
    if settings.host not in _WILDCARD_BINDS and settings.host not in ("127.0.0.1", "localhost", "::1"):
        hosts += [settings.host, f"{settings.host}:*"]
        origins += [f"http://{settings.host}:*", f"https://{settings.host}:*"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts + list(settings.allowed_hosts),
        allowed_origins=origins + list(settings.allowed_origins),
    )


def build_http_app(
    server: GatewayServer,
    settings: GatewaySettings,
    *,
    readiness: Callable[[], tuple[bool, dict[str, Any]]],
    metrics: Callable[[], bytes],
    lifespan: Callable[[], Any],
    extra_routes: list[BaseRoute] | None = None,
) -> Starlette:
    security = transport_security(settings)
    manager = StreamableHTTPSessionManager(
        app=server, security_settings=security, max_request_body_size=settings.max_body_bytes
    )
    # Strangers are refused before their bodies are read; malformed bodies before either SDK path.
    edge = McpEdge(StreamableHTTPASGIApp(manager), security, settings.max_body_bytes)
    mcp_app = AuthMiddleware(edge, ApiKeys(list(settings.clients)))

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ready, detail = readiness()
        return JSONResponse({"ready": ready, "upstreams": detail}, status_code=200 if ready else 503)

    async def metrics_endpoint(_: Request) -> Response:
        return Response(metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @asynccontextmanager
    async def app_lifespan(_: Starlette) -> AsyncIterator[None]:
        async with lifespan(), manager.run():
            yield

    return Starlette(
        routes=[
            Route("/mcp", endpoint=mcp_app, methods=["GET", "POST", "DELETE"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *(extra_routes or []),
        ],
        lifespan=app_lifespan,
        middleware=[Middleware(TrimHeaderWhitespace)],
    )
