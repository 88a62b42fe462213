"""The composition root: builds the gateway from config and owns start and stop."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup
from starlette.applications import Starlette

from gateway.catalog import Catalog
from gateway.config import Config
from gateway.core import build_chain
from gateway.downstream.handlers import Handlers, Pipeline
from gateway.downstream.http import build_http_app
from gateway.downstream.server import GatewayServer, build_server
from gateway.guards import ordered_guards
from gateway.observe.metrics import Metrics
from gateway.observe.observer import observed
from gateway.upstream import UpstreamPool

log = logging.getLogger("interlock")


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.catalog = Catalog(config)
        self.pool = UpstreamPool(config, events=self)
        chain = build_chain(ordered_guards(), self.pool.call_tool)
        self.pipeline = Pipeline(observed(chain, self.metrics))
        self.handlers = Handlers(config, self.catalog, self.pool, self.pipeline)
        self.server: GatewayServer = build_server(self.handlers)
        self._tg: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for sid in self.config.servers:
                self.metrics.upstream_up.labels(sid).set(0)
                self.metrics.upstream_restarts.labels(sid)
            await self.pool.start(tg)
            self._rebuild()
            log.info(
                "gateway ready: %d tools from %d servers", len(self.catalog.tools), len(self.config.servers)
            )
            try:
                yield self
            finally:
                self._tg = None
                with anyio.CancelScope(shield=True):
                    await self.pool.stop()
                tg.cancel_scope.cancel()

    def http_app(self) -> Starlette:
        return build_http_app(
            self.server,
            self.config.gateway,
            readiness=self.readiness,
            metrics=self.metrics.render,
            lifespan=self.running,
        )

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {}
        ready = True
        for sid, sup in self.pool.supervisors.items():
            detail[sid] = {"status": sup.health.status, "required": sup.cfg.required}
            if sup.health.last_error:
                detail[sid]["error"] = sup.health.last_error
            if sup.cfg.required and sup.health.status != "up":
                ready = False
        return ready, detail

    def _rebuild(self) -> None:
        # A server that dropped keeps its last known tools listed: calls to them answer
        # upstream_unavailable (retryable, with a hint) instead of a confusing "unknown tool".
        self.catalog.rebuild({sid: sup.lists for sid, sup in self.pool.supervisors.items()})

    # -- upstream events -------------------------------------------------------------------

    def on_health(self, server: str, up: bool) -> None:
        self.metrics.upstream_up.labels(server).set(1 if up else 0)

    def on_restart(self, server: str) -> None:
        self.metrics.upstream_restarts.labels(server).inc()

    def on_lists_changed(self, server: str) -> None:
        self._rebuild()
        if self._tg is not None:
            self._tg.start_soon(self.handlers.announce_lists_changed)

    def on_resource_updated(self, server: str, uri: str) -> None:
        if self._tg is not None:
            self._tg.start_soon(self.handlers.announce_resource_updated, server, uri)
