"""Tool pins: the definition of every tool as first seen, and whether it has changed since.

A pin survives restarts (SQLite by default), so a tool that an upstream swaps while the gateway
is down is still caught when it comes back.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import anyio.to_thread

PinStatus = Literal["pinned", "changed"]


@dataclass(frozen=True, slots=True)
class Pin:
    server: str
    tool: str
    """The upstream's own tool name."""
    digest: str
    """The accepted definition's hash."""
    status: PinStatus = "pinned"
    pending: str | None = None
    """The changed definition's hash, awaiting an operator's acceptance."""
    first_seen: float = 0.0
    changed_at: float | None = None


class PinStore(Protocol):
    async def all(self) -> list[Pin]: ...
    async def put(self, pin: Pin) -> None: ...
    async def accept(self, server: str, tool: str) -> Pin | None: ...


class MemoryPinStore:
    def __init__(self) -> None:
        self._pins: dict[tuple[str, str], Pin] = {}

    async def all(self) -> list[Pin]:
        return list(self._pins.values())

    async def put(self, pin: Pin) -> None:
        self._pins[(pin.server, pin.tool)] = pin

    async def accept(self, server: str, tool: str) -> Pin | None:
        pin = self._pins.get((server, tool))
        if pin is None:
            return None
        accepted = Pin(server, tool, pin.pending or pin.digest, "pinned", None, pin.first_seen, None)
        self._pins[(server, tool)] = accepted
        return accepted


_COLUMNS = "server, tool, digest, status, pending, first_seen, changed_at"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pins (
    server TEXT NOT NULL, tool TEXT NOT NULL, digest TEXT NOT NULL, status TEXT NOT NULL,
    pending TEXT, first_seen REAL NOT NULL, changed_at REAL, PRIMARY KEY (server, tool)
)
"""


class SqlitePinStore:
    """Pins in one SQLite file; every operation runs in a worker thread, off the event loop."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")  # the CLI may write while the gateway reads
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def all_sync(self) -> list[Pin]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM pins ORDER BY server, tool").fetchall()
        return [Pin(*row) for row in rows]

    def put_sync(self, pin: Pin) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?, ?, ?, ?)",
                (pin.server, pin.tool, pin.digest, pin.status, pin.pending, pin.first_seen, pin.changed_at),
            )

    def accept_sync(self, server: str, tool: str) -> Pin | None:
        with self._lock:
            self._db.execute(
                "UPDATE pins SET digest = COALESCE(pending, digest), status = 'pinned', pending = NULL, "
                "changed_at = NULL WHERE server = ? AND tool = ?",
                (server, tool),
            )
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM pins WHERE server = ? AND tool = ?", (server, tool)
            ).fetchone()
        return Pin(*row) if row else None

    async def all(self) -> list[Pin]:
        return await anyio.to_thread.run_sync(self.all_sync)

    async def put(self, pin: Pin) -> None:
        await anyio.to_thread.run_sync(self.put_sync, pin)

    async def accept(self, server: str, tool: str) -> Pin | None:
        return await anyio.to_thread.run_sync(self.accept_sync, server, tool)


def open_pin_store(url: str, base: Path) -> MemoryPinStore | SqlitePinStore:
    """``sqlite:///relative/or/absolute.db`` (relative to the config file's folder) or ``memory://``."""
    if url.startswith("memory://"):
        return MemoryPinStore()
    if url.startswith("sqlite:///"):
        raw = Path(url[len("sqlite:///") :])
        return SqlitePinStore(raw if raw.is_absolute() else base / raw)
    raise ValueError(f"unsupported state store {url!r}: expected sqlite:///PATH or memory://")


def now() -> float:
    return time.time()
