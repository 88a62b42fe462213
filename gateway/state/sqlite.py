"""The embedded state store: one SQLite file, the default for what must survive a restart.

- WAL journal, ``synchronous=NORMAL``: readers never block the writer, and a commit survives a
  crash of the process (only an OS crash or power loss may lose the last commits).
- Every decision (gcra, update, acquire) is one ``BEGIN IMMEDIATE`` transaction, so several
  processes on one file (two gateways, or the gateway and the CLI) stay exact: SQLite hands the
  write lock to one of them at a time and the others wait up to ``busy_timeout_ms``.
- Work runs in a worker thread (one at a time per store), never on the event loop.
- TTLs and leases are wall-clock epoch seconds from the store's clock, so they survive a restart and
  mean the same to every process. Expired rows are ignored when read and swept now and then.

A database that stays locked longer than ``busy_timeout_ms`` or cannot be written raises
``StoreUnavailable``; the guard's policy then decides (fail-open or fail-closed).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from gateway.core.clock import Clock
from gateway.state import gcra
from gateway.state.base import GcraDecision, StoreUnavailable, Updater
from gateway.state.memory import check_slots, check_ttl, decode_doc, encode_doc

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_MS = 2000
SWEEP_EVERY = 1000
"""Writes between two sweeps of expired rows."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state_gcra (
    key TEXT PRIMARY KEY, tat REAL NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_docs (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_slots (
    key TEXT NOT NULL, holder TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (key, holder)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS state_gcra_expires ON state_gcra (expires);
CREATE INDEX IF NOT EXISTS state_docs_expires ON state_docs (expires);
CREATE INDEX IF NOT EXISTS state_slots_expires ON state_slots (expires);
"""


class SqliteStateStore:
    name = "sqlite"

    def __init__(self, path: Path, clock: Clock, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.url = f"sqlite:///{path}"
        self._clock = clock
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None
        self._writes = 0
        self._db = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout_ms / 1000
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreUnavailable(f"state store {self.url} cannot be opened: {exc}") from exc

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)  # one connection: one worker thread at a time
        try:
            return await anyio.to_thread.run_sync(self._in_thread, fn, write, limiter=self._limiter)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"state store {self.url} unavailable: {exc}") from exc

    def _in_thread(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        with self._lock:
            if not write:
                return fn(self._db)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
                self._maybe_sweep()
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            return result

    def _maybe_sweep(self) -> None:
        self._writes += 1
        if self._writes % SWEEP_EVERY:
            return
        wall = self._clock.wall()
        for table in ("state_gcra", "state_docs", "state_slots"):
            self._db.execute(f"DELETE FROM {table} WHERE expires <= ?", (wall,))

    async def gcra(
        self, key: str, *, period_s: float, limit: int, burst: int, now: float, cost: int = 1
    ) -> GcraDecision:
        gcra.check_params(period_s, limit, burst, cost)

        def decide(db: sqlite3.Connection) -> GcraDecision:
            wall = self._clock.wall()
            row = db.execute(
                "SELECT tat FROM state_gcra WHERE key = ? AND expires > ?", (key, wall)
            ).fetchone()
            decision, new_tat = gcra.decide(
                row[0] if row else None, now=now, period_s=period_s, limit=limit, burst=burst, cost=cost
            )
            if new_tat is not None:
                db.execute(
                    "INSERT OR REPLACE INTO state_gcra VALUES (?, ?, ?)",
                    (key, new_tat, wall + gcra.expiry_s(new_tat, now)),
                )
            return decision

        return await self._run(decide, write=True)

    async def update(self, key: str, updater: Updater, *, ttl_s: float) -> Any:
        check_ttl(ttl_s)

        def read_modify_write(db: sqlite3.Connection) -> Any:
            wall = self._clock.wall()
            row = db.execute(
                "SELECT value FROM state_docs WHERE key = ? AND expires > ?", (key, wall)
            ).fetchone()
            new, result = updater(decode_doc(row[0] if row else None))
            encoded = encode_doc(new)
            if encoded is None:
                db.execute("DELETE FROM state_docs WHERE key = ?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO state_docs VALUES (?, ?, ?)", (key, encoded, wall + ttl_s))
            return result

        return await self._run(read_modify_write, write=True)

    async def get(self, key: str) -> dict[str, Any] | None:
        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT value FROM state_docs WHERE key = ? AND expires > ?", (key, self._clock.wall())
            ).fetchone()
            return row[0] if row else None

        return decode_doc(await self._run(read, write=False))

    async def acquire(self, key: str, *, limit: int, lease_s: float, holder: str) -> bool:
        check_slots(limit, lease_s)

        def take(db: sqlite3.Connection) -> bool:
            wall = self._clock.wall()
            db.execute("DELETE FROM state_slots WHERE key = ? AND expires <= ?", (key, wall))
            held, mine = db.execute(
                "SELECT count(*), coalesce(sum(holder = ?), 0) FROM state_slots WHERE key = ?", (holder, key)
            ).fetchone()
            if not mine and held >= limit:
                return False
            # A holder acquiring again renews its lease.
            db.execute("INSERT OR REPLACE INTO state_slots VALUES (?, ?, ?)", (key, holder, wall + lease_s))
            return True

        return await self._run(take, write=True)

    async def release(self, key: str, *, holder: str) -> None:
        def give_back(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM state_slots WHERE key = ? AND holder = ?", (key, holder))

        await self._run(give_back, write=False)

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                self._db.close()

        await anyio.to_thread.run_sync(close)
