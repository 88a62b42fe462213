"""Tool pins: the definition of every tool as first seen, and whether it has changed since.

Pins live in the configured state store (SQLite by default, Redis when shared), as one document,
so they survive restarts and every replica sees the same pins: a tool an upstream swaps while a
gateway is down is still caught when it comes back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from gateway.state.base import StateStore

PinStatus = Literal["pinned", "changed"]

_KEY = "pins"
_TTL_S = 10 * 365 * 24 * 3600.0  # pins never expire in practice


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


def _name(server: str, tool: str) -> str:
    return f"{server}\x1f{tool}"


class StorePins:
    """Pins kept in a ``StateStore`` as one document, changed atomically."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def all(self) -> list[Pin]:
        doc = await self.store.get(_KEY) or {}
        return sorted((Pin(**value) for value in doc.values()), key=lambda p: (p.server, p.tool))

    async def put(self, pin: Pin) -> None:
        def write(doc: dict[str, Any] | None) -> tuple[dict[str, Any], None]:
            return {**(doc or {}), _name(pin.server, pin.tool): asdict(pin)}, None

        await self.store.update(_KEY, write, ttl_s=_TTL_S)

    async def accept(self, server: str, tool: str) -> Pin | None:
        def accept(doc: dict[str, Any] | None) -> tuple[dict[str, Any] | None, Pin | None]:
            current = (doc or {}).get(_name(server, tool))
            if current is None:
                return doc, None
            pin = Pin(**current)
            accepted = Pin(server, tool, pin.pending or pin.digest, "pinned", None, pin.first_seen, None)
            return {**(doc or {}), _name(server, tool): asdict(accepted)}, accepted

        result: Pin | None = await self.store.update(_KEY, accept, ttl_s=_TTL_S)
        return result


class MemoryPinStore:
    """Pins for one process (tests, benchmarks)."""

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
