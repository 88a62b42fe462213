"""The composition root: builds the gateway from config and owns start and stop."""

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

from gateway.approvals import ApprovalRecord, ApprovalService, StateSigner
from gateway.approvals.gate import ApprovalGate
from gateway.approvals.rounds import Rounds
from gateway.approvals.secret import SecretLoader
from gateway.approvals.webhook import WebhookNotifier
from gateway.catalog import Catalog, ToolEntry
from gateway.config import Config, ConfigError, PolicyContext, PolicySet, Problem
from gateway.core import Caller, ToolResult, build_chain
from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import NotFound
from gateway.downstream.caller import new_request_id
from gateway.downstream.handlers import Handlers, Pipeline
from gateway.downstream.http import build_http_app
from gateway.downstream.server import GatewayServer, build_server
from gateway.guards import GuardDeps, ordered_guards
from gateway.guards.breaker import STATE_GAUGE
from gateway.guards.pinning import PinBook, SeenTool
from gateway.observe.metrics import Metrics
from gateway.observe.observer import observed
from gateway.observe.recent import RecentCall, RecentCalls
from gateway.reload import PolicyHolder
from gateway.state import MemoryStateStore, StateStore, StorePins, StoreUnavailable, open_store
from gateway.upstream import Health, UpstreamPool
from gateway.web.backend import CircuitView, UpstreamView
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
        self.policy = PolicyHolder(config.policies_dir, self._on_policy_change)
        base = config.source.parent if config.source else Path.cwd()
        # What must survive a restart (pins) goes to the configured store. Counters (rate limits,
        # loop histories, breakers) share it only when it is shared (Redis): with the embedded
        # SQLite default they stay in memory, where a decision costs microseconds, not a disk write.
        self.durable = _open_durable(config, base, self.clock)
        shared = config.gateway.state.split("://", 1)[0] in ("redis", "rediss", "memory")
        self.store = self.durable if shared else MemoryStateStore(self.clock)
        self.pins = PinBook(StorePins(self.durable), self.clock, self._on_pin_change)
        self.pool = UpstreamPool(config, events=self, clock=self.clock)
        # Approval records are durable (SQLite by default, Redis when shared): a pending request
        # survives a restart and is decided once across replicas.
        self.admin = config.admin
        self.approvals = ApprovalService(self.durable, self.clock, events=self)
        self.rounds = Rounds(self.approvals)
        self.secret = SecretLoader(self.durable, config.approvals.secret, self.clock, self._install_secret)
        self.recent = RecentCalls()
        self.circuit_states: dict[tuple[str, str], str] = {}
        hook = config.approvals.webhook
        self.webhook = WebhookNotifier(hook, self.clock, decide_url=self.decide_url) if hook else None
        gate = ApprovalGate(
            self.approvals,
            self.clock,
            config.approvals,
            decide_url=self.decide_url,
            rounds=self.rounds,
            load_signer=self.secret.load_once,
        )
        deps = GuardDeps(
            resolver=lambda call: self.policy.current.resolve_call(call),
            pins=self.pins,
            lookup=self.run_lookup,
            clock=self.clock,
            store=self.store,
            on_circuit_state=self._on_circuit_state,
            on_rate_limited=lambda server, tool: self.metrics.rate_limited.labels(server, tool).inc(),
            on_loop=lambda kind: self.metrics.loops_detected.labels(kind).inc(),
            approval=gate,
        )
        self.pipeline = Pipeline(
            observed(build_chain(ordered_guards(deps), self.pool.call_tool), self.metrics, self.recent)
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
            extra_routes=admin_routes(self),
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

    # -- approvals and the admin plane (gateway.web.backend.AdminBackend) --------------------

    def public_url(self) -> str:
        if self.admin.public_url:
            return self.admin.public_url.rstrip("/")
        host = self.config.gateway.host
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.config.gateway.port}"

    def decide_url(self, approval_id: str) -> str:
        return f"{self.public_url()}/admin/approvals/{approval_id}"

    async def decide(
        self, approval_id: str, approve: bool, *, by: str, comment: str | None = None
    ) -> ApprovalRecord:
        return await self.approvals.decide(approval_id, approve, by=by, comment=comment)

    def requested(self, record: ApprovalRecord) -> None:
        self.metrics.approvals_pending.inc()  # re-read from the store on the next sweep
        if self.webhook is not None:
            self.webhook.submit(record)
        log.info(
            "approval %s requested: %s for %s (rule %s, %s)",
            record.id,
            record.tool,
            record.client,
            record.rule,
            record.channel,
        )

    def decided(self, record: ApprovalRecord) -> None:
        self.metrics.approvals.labels(record.status).inc()
        self.metrics.approval_wait.observe(
            max(0.0, (record.decided_at or self.clock.wall()) - record.created)
        )
        self.metrics.approvals_pending.dec()
        log.info("approval %s %s by %s", record.id, record.status, record.decided_by or "nobody (expired)")

    async def _sweep_approvals(self) -> None:
        while True:
            try:
                self.metrics.approvals_pending.set(await self.approvals.sweep())
            except StoreUnavailable as exc:  # the store logs its outage once; no traceback each time
                log.debug("approval records could not be swept: %s", exc)
            except Exception:
                log.exception("approval records could not be swept")
            await anyio.sleep(_APPROVALS_SWEEP_S)

    def upstreams(self) -> list[UpstreamView]:
        tools: dict[str, int] = {}
        for entry in self.catalog.tools.values():
            tools[entry.server] = tools.get(entry.server, 0) + 1
        return [
            UpstreamView(
                id=sid,
                transport=sup.cfg.transport,
                status=sup.health.status,
                required=sup.cfg.required,
                tools=tools.get(sid, 0),
                error=sup.health.last_error,
            )
            for sid, sup in self.pool.supervisors.items()
        ]

    def circuits(self) -> list[CircuitView]:
        return [
            CircuitView(server=server, tool=tool or None, state=state)
            for (server, tool), state in sorted(self.circuit_states.items())
        ]

    def recent_calls(self, limit: int = 50) -> list[RecentCall]:
        return self.recent.newest(limit)

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
            await self.pins.reconcile(seen, lambda t: policies.resolve(_seen_context(t)).pinning)
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

    def _on_circuit_state(self, server: str, tool: str, state: str) -> None:
        self.metrics.circuit_state.labels(server, tool).set(STATE_GAUGE[state])
        self.circuit_states[(server, tool)] = state

    def _on_pin_change(self, server: str, tool: str) -> None:
        self.metrics.pin_changes.labels(server, tool).inc()

    # -- upstream events -------------------------------------------------------------------

    def on_health(self, server: str, up: bool) -> None:
        self.metrics.upstream_up.labels(server).set(1 if up else 0)
        if not up:  # "ready" waits for the catalog rebuild that follows an upstream coming up
            self._report_readiness()

    def on_restart(self, server: str) -> None:
        self.metrics.upstream_restarts.labels(server).inc()

    def on_lists_changed(self, server: str) -> None:
        if self._tg is not None:
            self._tg.start_soon(self._catalog_changed)

    def on_resource_updated(self, server: str, uri: str) -> None:
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
