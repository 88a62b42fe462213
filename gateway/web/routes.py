"""The admin plane's routes: the web UI at ``/admin`` and the REST API under ``/admin/api/``.

The gateway mounts them next to ``/mcp`` on its own HTTP app (``gateway.downstream.http``), so
the admin plane shares the gateway's port; what it may do is bounded by ``AdminBackend``.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from gateway.web.api import AdminApi
from gateway.web.backend import AdminBackend
from gateway.web.views import AdminUi


def admin_routes(backend: AdminBackend) -> list[BaseRoute]:
    # The API first: its paths are more specific than the UI's /admin/approvals/{id}.
    return [*AdminApi(backend).routes(), *AdminUi(backend).routes()]
