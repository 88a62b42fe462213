"""Stores for what the gateway must remember: pins now; counters, approvals and audit later."""

from gateway.state.pins import MemoryPinStore, Pin, PinStore, SqlitePinStore, open_pin_store

__all__ = ["MemoryPinStore", "Pin", "PinStore", "SqlitePinStore", "open_pin_store"]
