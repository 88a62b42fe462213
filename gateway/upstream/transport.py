"""Transport factories: stdio (a supervised child process) and Streamable HTTP (a pooled client)."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx2
from mcp.client._transport import TransportStreams
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from gateway.config import HttpServer, StdioServer
from gateway.upstream.wire import WireLog, WireWatch

log = logging.getLogger("interlock.upstream")

_TAIL_LINES = 8


@dataclass
class HttpStatusLog:
    """What the HTTP layer saw for each JSON-RPC request id.

    The SDK folds a non-2xx answer into a generic JSON-RPC error; the status code and
    Retry-After are what an agent needs to hear, so a response hook keeps them here, keyed by
    the id the gateway minted for the request.
    """

    entries: dict[str, tuple[int, str | None]] = field(default_factory=dict)

    def pop(self, request_id: str) -> tuple[int, str | None] | None:
        return self.entries.pop(request_id, None)


def _request_id_of(body: bytes) -> str | None:
    # Cheap scan instead of a JSON parse on every response: the gateway's ids are "il-<n>".
    marker = b'"id":"il-'
    start = body.find(marker)
    if start < 0:
        return None
    start += len(b'"id":"')
    end = body.find(b'"', start)
    return body[start:end].decode() if end > start else None


@asynccontextmanager
async def http_transport(
    cfg: HttpServer, status_log: HttpStatusLog, wire: WireLog, server: str
) -> AsyncIterator[TransportStreams]:
    async def on_response(response: httpx2.Response) -> None:
        if response.status_code < 400:
            return
        rid = _request_id_of(response.request.content or b"")
        if rid is not None:
            status_log.entries[rid] = (response.status_code, response.headers.get("retry-after"))
            if len(status_log.entries) > 1024:  # answers nobody collected must not pile up
                status_log.entries.pop(next(iter(status_log.entries)))

    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=60)
    timeout = httpx2.Timeout(30.0, read=300.0)
    hooks: dict[str, list[Callable[..., Any]]] = {"response": [on_response]}
    async with (
        httpx2.AsyncClient(
            headers=dict(cfg.headers), timeout=timeout, limits=limits, event_hooks=hooks
        ) as client,
        streamable_http_client(cfg.url, http_client=client) as (read, write),
    ):
        yield WireWatch(read, wire, server), write


class StderrPump:
    """Carries a child's stderr into the gateway log (at debug: servers chat there freely), and
    keeps its last lines, which the supervisor quotes when the child fails: a crash's traceback
    is then seen at the default level without every line of chatter being logged.

    It also tells when the child is gone: stderr reaches EOF once the process (and every
    descendant holding the pipe) has exited, which is the earliest crash signal a stdio upstream
    gives.
    """

    def __init__(self, server: str, on_eof: Callable[[], None]) -> None:
        read_fd, write_fd = os.pipe()
        self.writer: TextIO = os.fdopen(write_fd, "w")
        self._reader = os.fdopen(read_fd, "r", errors="replace")
        self._server = server
        self._on_eof = on_eof
        self._last: deque[str] = deque(maxlen=_TAIL_LINES)
        self.eof = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stderr-{server}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        logger = logging.getLogger(f"interlock.upstream.{self._server}")
        try:
            for line in self._reader:
                text = line.rstrip()
                self._last.append(text)
                logger.debug("stderr: %s", text)
        finally:
            self._reader.close()
            self.eof.set()
            self._on_eof()

    def tail(self) -> list[str]:
        """The child's last few non-blank stderr lines, oldest first."""
        return [line.strip() for line in list(self._last) if line.strip()]

    def release_writer(self) -> None:
        """Drop the gateway's copy of the write end once the child holds its own."""
        if not self.writer.closed:
            self.writer.close()


@asynccontextmanager
async def stdio_transport(
    cfg: StdioServer, pump: StderrPump, wire: WireLog, server: str
) -> AsyncIterator[TransportStreams]:
    params = StdioServerParameters(
        command=cfg.command,
        args=list(cfg.args),
        env=dict(cfg.env),
        cwd=cfg.cwd,
        # Strict decoding would let one stray byte on stdout kill the reader for good. Replaced,
        # it becomes U+FFFD: a garbage line then fails to parse and is skipped like any other.
        encoding_error_handler="replace",
    )
    try:
        async with stdio_client(params, errlog=pump.writer) as (read, write):
            pump.release_writer()
            yield WireWatch(read, wire, server), write
    finally:
        pump.release_writer()
