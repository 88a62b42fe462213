"""Serving an ASGI app on a real uvicorn server inside the test's own event loop.

The browser needs a real socket; running uvicorn in the same loop as the test lets the test read
and change the approval service directly, with no thread hand-offs.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import uvicorn
from starlette.types import ASGIApp


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test runner owns SIGINT/SIGTERM: Ctrl-C must stop pytest, not just this server.
        yield


@asynccontextmanager
async def serve(app: ASGIApp, *, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``) while uvicorn serves ``app``."""
    # A socket bound here, handed to uvicorn: no window in which another process takes the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = _Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            await server.ready.wait()
            if not server.started:
                raise RuntimeError("uvicorn did not start (see its log above)")
            try:
                yield f"http://{host}:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()
