"""One URL picks the state store: ``memory://``, ``sqlite:///file.db`` or ``redis://host:port/db``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from gateway.core.clock import Clock
from gateway.state.base import StateStore
from gateway.state.memory import DEFAULT_MAX_KEYS, MemoryStateStore
from gateway.state.sqlite import DEFAULT_BUSY_TIMEOUT_MS, SqliteStateStore


def open_store(url: str, base: Path, clock: Clock) -> StateStore:
    """Open (lazily, for Redis: nothing is contacted until the first call) the store ``url`` names.

    - ``memory://`` (``?max_keys=100000``): this process only, gone on restart;
    - ``sqlite:///relative.db`` (relative to ``base``, the config file's folder) or
      ``sqlite:////absolute.db`` (``?busy_timeout_ms=2000``): one file, survives restarts, shared
      by the processes on one host;
    - ``redis://[user:password@]host:port/db`` or ``rediss://`` (TLS), with ``timeout_ms``,
      ``connect_timeout_ms``, ``max_connections``, ``prefix`` and ``fail_fast_ms``: shared by
      every replica.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in ("redis", "rediss"):
        from gateway.state.redis import RedisStateStore  # redis-py takes ~0.1 s to import

        return RedisStateStore(url, clock)
    if scheme == "memory":
        options = _options(url, {"max_keys"})
        return MemoryStateStore(clock, max_keys=int(options.get("max_keys", DEFAULT_MAX_KEYS)))
    if scheme == "sqlite" and url.startswith("sqlite:///"):
        path_part, _, _ = url[len("sqlite:///") :].partition("?")
        if not path_part:
            raise ValueError(f"state store {url!r}: no file name after sqlite:///")
        raw = Path(path_part)
        options = _options(url, {"busy_timeout_ms"})
        return SqliteStateStore(
            raw if raw.is_absolute() else base / raw,
            clock,
            busy_timeout_ms=int(options.get("busy_timeout_ms", DEFAULT_BUSY_TIMEOUT_MS)),
        )
    raise ValueError(
        f"unsupported state store {url.split('@')[-1]!r}: expected memory://, sqlite:///PATH, "
        "redis://HOST:PORT/DB or rediss://HOST:PORT/DB"
    )


def _options(url: str, known: set[str]) -> dict[str, str]:
    options = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"state store {url!r}: unknown option(s) {', '.join(unknown)} (known: {sorted(known)})"
        )
    return options
