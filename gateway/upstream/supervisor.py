"""Keeps one upstream connected: start, health, restart with backoff, and its cached lists."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
import anyio.to_thread
import mcp_types as types
from anyio.abc import TaskStatus
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.client.subscriptions import ResourceUpdated

from gateway import __version__
from gateway.config import HttpServer, StdioServer
from gateway.core.clock import Clock, SystemClock
from gateway.upstream import lists
from gateway.upstream.backroute import BackRouter
from gateway.upstream.connection import UpstreamConnection
from gateway.upstream.transport import HttpStatusLog, StderrPump, http_transport, stdio_transport
from gateway.upstream.wire import WireLog

log = logging.getLogger("interlock.upstream")

_ALL_PROFILES = frozenset({"elicitation", "sampling", "roots"})
_MODES = {"auto": "auto", "2025-11-25": "legacy", "2026-07-28": "2026-07-28"}
_HEARTBEAT_S = 15.0
_STABLE_S = 10.0  # a connection that lived this long resets the restart backoff
_LAST_WORDS_S = 0.5  # how long a failed child's stderr may take to drain before it is quoted


class UpstreamEvents(Protocol):
    """What the layers above want to hear about an upstream (metrics, catalog, subscribers)."""

    def on_health(self, server: str, up: bool) -> None: ...
    def on_restart(self, server: str) -> None: ...
    def on_lists_changed(self, server: str) -> None: ...
    def on_resource_updated(self, server: str, uri: str) -> None: ...


@dataclass
class Health:
    status: Literal["starting", "up", "down"] = "starting"
    last_error: str | None = None
    restarts: int = 0
    since: float = field(default_factory=time.time)
    protocol_version: str | None = None


@dataclass
class Lists:
    tools: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)


class Supervisor:
    """One connection lane to an upstream, kept alive.

    The primary lane connects in the configured era (auto-detected by default) and owns the
    upstream's lists and health. Secondary lanes (``primary=False``) connect in the 2025-11-25 era
    for callers that need it (see ``UpstreamPool.connection``); if the upstream refuses that era on
    the first attempt, such a lane gives up for good and the primary lane serves.
    """

    def __init__(
        self,
        server: str,
        cfg: StdioServer | HttpServer,
        events: UpstreamEvents,
        *,
        mode: str | None = None,
        primary: bool = True,
        profile: frozenset[str] = frozenset(),
        clock: Clock | None = None,
    ) -> None:
        self.server = server
        self.clock = clock or SystemClock()
        """Backoff, heartbeats and the stability window run on it, so tests move time instead."""
        self.cfg = cfg
        self.events = events
        self.mode = mode or _MODES[cfg.protocol]
        self.primary = primary
        self.profile = profile if primary is False or lanes_possible(cfg) else _ALL_PROFILES
        """The client capabilities this lane declares at initialize (2025-11-25): exactly those of
        the callers it serves, so an upstream never believes a client can answer what it cannot."""
        self.unsupported = False
        self.health = Health(since=self.clock.wall())
        self.lists = Lists()
        self.conn: UpstreamConnection | None = None
        # anyio primitives need a running loop, so they are made when the supervisor starts.
        self.first_attempt: anyio.Event | None = None
        self.finished: anyio.Event | None = None
        self._stopping = False
        self._scope: anyio.CancelScope | None = None
        self._pump: StderrPump | None = None
        self._relist_due: anyio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.first_attempt = first_attempt = anyio.Event()
        self.finished = finished = anyio.Event()
        self._scope = scope = anyio.CancelScope()
        task_status.started()
        try:
            with scope:
                await self._supervise()
        finally:
            first_attempt.set()
            finished.set()

    async def _supervise(self) -> None:
        policy = self.cfg.restart if isinstance(self.cfg, StdioServer) else None
        initial = policy.initial_backoff_s if policy else 0.5
        ceiling = policy.max_backoff_s if policy else 30.0
        factor = policy.multiplier if policy else 2.0
        backoff = initial
        while not self._stopping:
            started = self.clock.monotonic()
            try:
                await self._serve_once()
            except Exception as exc:  # any failure of one upstream stays with that upstream
                stderr = await self._last_words()
                reason = f"{type(exc).__name__}: {exc}"
                self._mark_down(_with_last_line(reason, stderr))
                log.warning(
                    "%s: connection failed (%s): %s%s", self.server, self.mode, reason, _quoted(stderr)
                )
                if not self.primary and self.health.restarts == 0 and self.health.protocol_version is None:
                    self.unsupported = True  # the upstream does not speak this era; the primary lane serves
                    return
            finally:
                if self.first_attempt is not None:
                    self.first_attempt.set()
            if self._stopping:
                break
            if self.clock.monotonic() - started > _STABLE_S:
                backoff = initial
            delay = backoff * random.uniform(0.8, 1.2)
            log.info("%s: reconnecting in %.1fs", self.server, delay)
            await self.clock.sleep(delay)
            backoff = min(backoff * factor, ceiling)
            self.health.restarts += 1
            self.events.on_restart(self.server)

    def stop(self) -> None:
        """Close gracefully when connected (so the child is reaped); otherwise stop whatever is pending."""
        self._stopping = True
        if self.conn is not None:
            self.conn.closed.set()
        elif self._scope is not None:
            self._scope.cancel()

    async def _serve_once(self) -> None:
        router = BackRouter(self.server)
        status_log = HttpStatusLog() if isinstance(self.cfg, HttpServer) else None
        wire = WireLog(http=isinstance(self.cfg, HttpServer))
        self._relist_due = anyio.Event()  # a change announced while connecting is listed once up
        loop = asyncio.get_running_loop()
        gone = anyio.Event()
        if isinstance(self.cfg, StdioServer):

            def child_gone() -> None:
                loop.call_soon_threadsafe(gone.set)

            self._pump = pump = StderrPump(self.server, on_eof=child_gone)
            transport = stdio_transport(self.cfg, pump, wire, self.server)
        else:
            assert status_log is not None
            transport = http_transport(self.cfg, status_log, wire, self.server)
        client = Client(
            transport,
            mode=self.mode,
            sampling_callback=router.sampling if "sampling" in self.profile else None,
            elicitation_callback=router.elicitation if "elicitation" in self.profile else None,
            list_roots_callback=router.roots if "roots" in self.profile else None,
            logging_callback=router.log_message,
            message_handler=self._on_message,
            client_info=types.Implementation(name="interlock", version=__version__),
            cache=None,
        )
        # One scope spans the whole connection: the client's task groups must close inside the
        # scope that opened them. Its deadline bounds only the connect phase.
        with anyio.CancelScope(deadline=anyio.current_time() + self.cfg.connect_timeout_s) as scope:
            try:
                async with client:
                    conn = UpstreamConnection(self.server, client, router, status_log, wire)
                    if self.primary:
                        await self._refresh(conn)
                    scope.deadline = math.inf
                    await self._serve(conn, client, gone)
            except BaseExceptionGroup as group:
                leaf = _first_leaf(group)
                if isinstance(leaf, anyio.get_cancelled_exc_class()):
                    raise
                raise leaf from group
        if scope.cancelled_caught and not self._stopping:
            raise TimeoutError(f"no answer within connect_timeout_s={self.cfg.connect_timeout_s}")

    async def _last_words(self) -> list[str]:
        """What a stdio child that just failed said last on stderr (often the traceback's last lines)."""
        pump = self._pump
        if pump is None:
            return []
        if not pump.eof.is_set():  # a child that just died may still be flushing its stderr
            await anyio.to_thread.run_sync(pump.eof.wait, _LAST_WORDS_S, abandon_on_cancel=True)
        return pump.tail()

    async def _serve(self, conn: UpstreamConnection, client: Client, gone: anyio.Event) -> None:
        self.conn = conn
        self._mark_up(conn)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, conn)
                tg.start_soon(_wait_then_set, gone, conn.closed)
                if self.primary:
                    tg.start_soon(self._relister)
                if conn.modern and self.primary:
                    tg.start_soon(self._listen, client, conn)
                await conn.closed.wait()
                tg.cancel_scope.cancel()
        finally:
            self.conn = None
            if not self._stopping:
                stderr = self._pump.tail() if self._pump is not None else []
                self._mark_down(_with_last_line("connection lost", stderr))
                log.warning("%s: connection lost%s", self.server, _quoted(stderr))

    def _mark_up(self, conn: UpstreamConnection) -> None:
        self.health.status = "up"
        self.health.last_error = None
        self.health.since = self.clock.wall()
        self.health.protocol_version = conn.protocol_version
        log.info("%s: up (protocol %s, %d tools)", self.server, conn.protocol_version, len(self.lists.tools))
        if self.primary:
            self.events.on_health(self.server, True)
            self.events.on_lists_changed(self.server)
        if self.first_attempt is not None:
            self.first_attempt.set()

    def _mark_down(self, reason: str) -> None:
        self.health.status = "down"
        self.health.last_error = reason
        self.health.since = self.clock.wall()
        if self.primary:
            self.events.on_health(self.server, False)

    # -- lists -----------------------------------------------------------------------------

    async def _refresh(self, conn: UpstreamConnection) -> None:
        timeout = self.cfg.connect_timeout_s
        caps = conn.capabilities
        fresh = Lists()
        if "tools" in caps:
            raw = await conn.list_all("tools/list", "tools", timeout_s=timeout)
            fresh.tools = conn.learn_tools(lists.valid_tools(self.server, raw))
        if "prompts" in caps:
            raw = await conn.list_all("prompts/list", "prompts", timeout_s=timeout)
            fresh.prompts = lists.valid_prompts(self.server, raw)
        if "resources" in caps:
            raw = await conn.list_all("resources/list", "resources", timeout_s=timeout)
            fresh.resources = lists.valid_resources(self.server, raw)
            raw = await conn.list_all("resources/templates/list", "resourceTemplates", timeout_s=timeout)
            fresh.templates = lists.valid_templates(self.server, raw)
        self.lists = fresh

    async def refresh_now(self) -> None:
        conn = self.conn
        if conn is None or not self.primary:
            return
        try:
            await self._refresh(conn)
        except Exception as exc:
            log.warning("%s: could not refresh lists: %s", self.server, exc)
            return
        self.events.on_lists_changed(self.server)

    def _lists_changed(self) -> None:
        """An upstream announced a list change. Announcements that arrive while a re-listing is
        due or running only mark it due again: however many come, one more listing follows, not
        one per announcement (an upstream may send them by the thousand)."""
        if self._relist_due is not None:
            self._relist_due.set()

    async def _relister(self) -> None:
        while True:
            due = self._relist_due
            assert due is not None
            await due.wait()
            self._relist_due = anyio.Event()
            await self.refresh_now()

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            log.debug("%s: transport reported %r", self.server, message)
            return
        if isinstance(
            message,
            types.ToolListChangedNotification
            | types.PromptListChangedNotification
            | types.ResourceListChangedNotification,
        ):
            self._lists_changed()
        elif isinstance(message, types.ResourceUpdatedNotification):
            self.events.on_resource_updated(self.server, message.params.uri)

    async def _listen(self, client: Client, conn: UpstreamConnection) -> None:
        """2026-07-28 upstreams announce list changes only on a subscriptions/listen stream."""
        try:
            async with client.listen(
                tools_list_changed=True, prompts_list_changed=True, resources_list_changed=True
            ) as sub:
                async for event in sub:
                    if isinstance(event, ResourceUpdated):
                        self.events.on_resource_updated(self.server, event.uri)
                    else:
                        self._lists_changed()
        except Exception as exc:
            # Many servers have none (the method is optional); list changes then come with refreshes.
            log.debug("%s: no list-change stream (%s)", self.server, type(exc).__name__)

    async def _heartbeat(self, conn: UpstreamConnection) -> None:
        while True:
            await self.clock.sleep(_HEARTBEAT_S)
            try:
                with anyio.fail_after(10):
                    if conn.modern:  # 2026-07-28 has no ping; discover is its cheapest round trip
                        await conn.client.session.send_discover(conn.protocol_version)
                    else:
                        await conn.request("ping", None)
            except Exception as exc:
                log.warning("%s: heartbeat failed (%s)", self.server, type(exc).__name__)
                conn.closed.set()
                return


def _with_last_line(reason: str, stderr: list[str]) -> str:
    """The health's ``last_error``: the reason, and what the child said last on stderr."""
    return (f"{reason}; stderr: {stderr[-1]}" if stderr else reason)[:300]


def _quoted(stderr: list[str]) -> str:
    return f"; its stderr ended with: {' | '.join(stderr)}" if stderr else ""


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure inside nested task-group errors: what a log line should name."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _wait_then_set(source: anyio.Event, target: anyio.Event) -> None:
    await source.wait()
    target.set()


def lanes_possible(cfg: StdioServer | HttpServer) -> bool:
    """Whether other lanes can serve capable 2025-11-25 callers; if not, the primary must declare
    every capability and the gateway refuses on behalf of callers that lack one."""
    return isinstance(cfg, HttpServer) or cfg.stateless
