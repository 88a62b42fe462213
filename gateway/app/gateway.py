"""The gateway: built from config; owns start and stop, and keeps catalog, pins and policy in step."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from starlette.applications import Starlette

from gateway.app.admin import AdminView
from gateway.app.events import ApprovalEventSink, GuardEventSink, UpstreamEventSink
from gateway.approvals import ApprovalService, StateSigner
from gateway.approvals.gate import ApprovalGate
from gateway.approvals.rounds import Rounds
from gateway.approvals.secret import SecretLoader
from gateway.approvals.webhook import WebhookNotifier
from gateway.catalog import Catalog, ToolEntry
from gateway.config import Config, ConfigError, PolicyContext, PolicySet, Problem
from gateway.core import Caller, ToolResult
from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import NotFound
from gateway.downstream.caller import new_request_id
from gateway.downstream.handlers import Handlers, Pipeline
from gateway.downstream.http import build_http_app
from gateway.downstream.server import GatewayServer, build_server
from gateway.guards.pinning import PINNING, PinBook, SeenTool
from gateway.observe.metrics import Metrics
from gateway.observe.observer import observer
from gateway.observe.recent import RecentCalls
from gateway.pipeline import POLICIES, GuardDeps, build_pipeline
from gateway.reload import PolicyHolder
from gateway.state import MemoryStateStore, StateStore, StorePins, StoreUnavailable, open_store
from gateway.upstream import Health, UpstreamPool
from gateway.web.routes import admin_routes

log = logging.getLogger("interlock")

_PIN_REFRESH_S = 2.0  # how soon an operator's `interlock pins accept` takes effect
_APPROVALS_SWEEP_S = 5.0  # how often expiries are written down and the pending gauge re-read


class Gateway:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.catalog = Catalog(config)
        self.policy = PolicyHolder(POLICIES, config.policies_dir, self._on_policy_change)
        base = config.source.parent if config.source else Path.cwd()
        # What must survive a restart (pins) goes to the configured store. Counters (rate limits,
        # loop histories, breakers) share it only when it is shared (Redis): with the embedded
        # SQLite default they stay in memory, where a decision costs microseconds, not a disk write.
        self.durable = _open_durable(config, base, self.clock)
        shared = config.gateway.state.split("://", 1)[0] in ("redis", "rediss", "memory")
        self.store = self.durable if shared else MemoryStateStore(self.clock)
        self.pins = PinBook(StorePins(self.durable), self.clock, self._on_pin_change)
        upstream_events = UpstreamEventSink(
            self.metrics,
            health=self._on_health,
            lists_changed=self._on_lists_changed,
            resource_updated=self._on_resource_updated,
        )
        self.pool = UpstreamPool(config, events=upstream_events, clock=self.clock)
        self.recent = RecentCalls()
        guard_events = GuardEventSink(self.metrics)
        # Approval records are durable (SQLite by default, Redis when shared): a pending request
        # survives a restart and is decided once across replicas.
        self.approvals = ApprovalService(self.durable, self.clock)
        self.secret = SecretLoader(self.durable, config.approvals.secret, self.clock, self._install_secret)
        self.admin = AdminView(
            config, self.approvals, self.pool, self.catalog, self.recent, guard_events.circuit_states
        )
        hook = config.approvals.webhook
        webhook = WebhookNotifier(hook, self.clock, decide_url=self.admin.decide_url) if hook else None
        self.webhook = webhook
        self.approvals.events = ApprovalEventSink(self.metrics, self.clock, webhook)
        self.rounds = Rounds(self.approvals)
        gate = ApprovalGate(
            self.approvals,
            self.clock,
            config.approvals,
            decide_url=self.admin.decide_url,
            rounds=self.rounds,
            load_signer=self.secret.load_once,
        )
        deps = GuardDeps(
            resolver=lambda call: self.policy.current.resolve_call(call),
            clock=self.clock,
            store=self.store,
            lookup=self.run_lookup,
            pins=self.pins,
            events=guard_events,
            approval=gate,
        )
        self.pipeline = Pipeline(
            build_pipeline(deps, self.pool.call_tool, observe=observer(self.metrics, self.recent))
        )
        self.handlers = Handlers(
            config, self.catalog, self.pool, self.pipeline, visibility=self.visible_tools
        )
        self.server: GatewayServer = build_server(self.handlers)
        self._tg: TaskGroup | None = None
        self._serving = False
        self._said_ready: bool | None = None
        self._pins_stale = False
        self._visible: dict[str, tuple[tuple[Any, ...], list[Mapping[str, Any]]]] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        # Two task groups: the upstreams in the outer one, every background chore (sweeps, pin
        # refreshes, catalog rebuilds, policy watches) in the inner one, which is cancelled first,
        # so that no chore is still using a store while it is closed.
        async with anyio.create_task_group() as tg:
            for sid in self.config.servers:
                self.metrics.upstream_up.labels(sid).set(0)
                self.metrics.upstream_restarts.labels(sid)
            try:
                async with anyio.create_task_group() as chores:
                    # The store may be down (a Redis outage): start anyway and read the secret later.
                    if not await self.secret.load_once():
                        chores.start_soon(self.secret.keep_trying)
                    await self.pool.start(tg)
                    await self._catalog_changed(announce=False)
                    self._tg = chores
                    chores.start_soon(self._sweep_approvals)
                    if self.webhook is not None:
                        chores.start_soon(self.webhook.run)
                    chores.start_soon(self.policy.watch)
                    chores.start_soon(self.policy.watch_sighup)
                    chores.start_soon(self._refresh_pins)
                    try:
                        yield self
                    finally:
                        self._tg = None
                        chores.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    if self.webhook is not None:
                        await self.webhook.aclose()
                    await self.pool.stop()
                    await self.store.close()
                    if self.durable is not self.store:
                        await self.durable.close()
                tg.cancel_scope.cancel()

    # -- telling the operator where and whether it serves ------------------------------------

    def serving(self, where: Sequence[str]) -> None:
        """Called once the gateway listens (the socket is bound): say where, then whether it is ready."""
        for place in where:
            log.info("listening on %s", place)
        self._serving = True
        self._report_readiness(force=True)

    def _report_readiness(self, *, force: bool = False) -> None:
        """Log "ready" once every required upstream is up, and what it waits for when not."""
        if not self._serving:
            return  # said after "listening on", not before
        ready, _ = self.readiness()
        if ready == self._said_ready and not force:
            return
        self._said_ready = ready
        down = [(sid, sup) for sid, sup in self.pool.supervisors.items() if sup.health.status != "up"]
        if not ready:
            waiting = ", ".join(_why(sid, sup.health) for sid, sup in down if sup.cfg.required)
            log.warning("not ready: waiting for required upstream %s", waiting)
            return
        optional = ", ".join(_why(sid, sup.health) for sid, sup in down)
        log.info(
            "ready: %d tools from %d servers%s",
            len(self.catalog.tools),
            len(self.config.servers) - len(down),
            f"; optional upstream not up: {optional}" if optional else "",
        )

    def _install_secret(self, secret: bytes) -> None:
        self.rounds.signer = StateSigner(secret, self.clock, self.durable)

    def http_app(self) -> Starlette:
        return build_http_app(
            self.server,
            self.config.gateway,
            readiness=self.readiness,
            metrics=self.metrics.render,
            lifespan=self.running,
            extra_routes=admin_routes(self.admin),
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

    # -- approvals -------------------------------------------------------------------------

    async def _sweep_approvals(self) -> None:
        while True:
            try:
                self.metrics.approvals_pending.set(await self.approvals.sweep())
            except StoreUnavailable as exc:  # the store logs its outage once; no traceback each time
                log.debug("approval records could not be swept: %s", exc)
            except Exception:
                log.exception("approval records could not be swept")
            await anyio.sleep(_APPROVALS_SWEEP_S)

    # -- the catalog as each client sees it ------------------------------------------------

    def visible_tools(self, caller: Caller) -> list[Mapping[str, Any]]:
        """The tools this caller may see: access policy and pins applied, cached per state."""
        policies = self.policy.current
        state = (self.catalog.version, policies.digest, self.pins.blocked)
        cached = self._visible.get(caller.principal)
        if cached is not None and cached[0] == state:
            return cached[1]
        tools = [
            entry.definition
            for entry in self.catalog.tools.values()
            if entry.exposed_name not in self.pins.blocked
            and policies.is_listed(_context(entry, caller.principal))
        ]
        if len(self._visible) > 10_000:
            self._visible.clear()
        self._visible[caller.principal] = (state, tools)
        return tools

    async def run_lookup(self, exposed_name: str, arguments: Mapping[str, Any], caller: Caller) -> ToolResult:
        """A reference check's lookup, run through the same pipeline as any call."""
        entry = self.catalog.tools.get(exposed_name)
        if entry is None:
            raise NotFound(f"lookup tool {exposed_name} is not in the catalog")
        return await self.pipeline.run(entry.call(arguments, caller, new_request_id()))

    # -- keeping the catalog, pins and policy in step ---------------------------------------

    async def _catalog_changed(self, *, announce: bool = True) -> None:
        # A server that dropped keeps its last known tools listed: calls to them answer
        # upstream_unavailable (retryable, with a hint) instead of a confusing "unknown tool".
        self.catalog.rebuild({sid: sup.lists for sid, sup in self.pool.supervisors.items()})
        await self._check_pins()
        if announce:
            await self.handlers.announce_lists_changed()
        self._report_readiness()

    async def _check_pins(self) -> bool:
        """Compare the catalog with the pins; True when that changed what is blocked."""
        policies = self.policy.current
        seen = [
            SeenTool(e.server, e.upstream_name, e.exposed_name, e.digest) for e in self.catalog.tools.values()
        ]
        blocked = self.pins.blocked
        try:
            await self.pins.reconcile(
                seen, lambda t: policies.resolve_listed(_seen_context(t)).of(PINNING).mode
            )
        except Exception as exc:  # a broken state store must not take the catalog down
            if not self._pins_stale:  # said once; checked again every refresh until it works
                if isinstance(exc, StoreUnavailable):
                    log.warning(
                        "tool pins could not be checked (%s); trying again until the store answers", exc
                    )
                else:
                    log.exception("tool pins could not be checked")
            self._pins_stale = True
            return False
        if self._pins_stale:
            log.info("tool pins checked again")
        self._pins_stale = False
        return self.pins.blocked != blocked

    async def _refresh_pins(self) -> None:
        while True:
            await anyio.sleep(_PIN_REFRESH_S)
            try:
                # After a failed check the catalog is compared anew; else an operator's accept is read.
                changed = await self._check_pins() if self._pins_stale else await self.pins.refresh()
                if changed:
                    await self.handlers.announce_lists_changed()
            except StoreUnavailable as exc:
                log.debug("tool pins could not be refreshed: %s", exc)
            except Exception:
                log.exception("tool pins could not be refreshed")

    def _on_policy_change(self, _: PolicySet) -> None:
        if self._tg is not None:  # access and pinning modes may have changed what is listed
            self._tg.start_soon(self._catalog_changed)

    def _on_pin_change(self, server: str, tool: str) -> None:
        self.metrics.pin_changes.labels(server, tool).inc()

    # -- upstream events that change what clients see ---------------------------------------

    def _on_health(self, server: str, up: bool) -> None:
        if not up:  # "ready" waits for the catalog rebuild that follows an upstream coming up
            self._report_readiness()

    def _on_lists_changed(self, server: str) -> None:
        if self._tg is not None:
            self._tg.start_soon(self._catalog_changed)

    def _on_resource_updated(self, server: str, uri: str) -> None:
        if self._tg is not None:
            self._tg.start_soon(self.handlers.announce_resource_updated, server, uri)


def _open_durable(config: Config, base: Path, clock: Clock) -> StateStore:
    """The configured store; one that cannot be opened (an unwritable folder) is a config error."""
    try:
        return open_store(config.gateway.state, base, clock)
    except (OSError, sqlite3.Error) as exc:
        file = str(config.source) if config.source else "servers.toml"
        problem = f"cannot open the state store ({exc}); is its folder there and writable by this user?"
        raise ConfigError(file, [Problem("gateway.state", problem)]) from exc


def _why(server: str, health: Health) -> str:
    why = f"{health.status}: {health.last_error}" if health.last_error else health.status
    return f"{server} ({why})"


def _context(entry: ToolEntry, client: str) -> PolicyContext:
    return PolicyContext(
        server=entry.server,
        tool=entry.upstream_name,
        exposed=entry.exposed_name,
        client=client,
        annotations=entry.annotations,
    )


def _seen_context(tool: SeenTool) -> PolicyContext:
    return PolicyContext(server=tool.server, tool=tool.tool, exposed=tool.exposed)
