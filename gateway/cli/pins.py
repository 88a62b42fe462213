"""``interlock pins list|accept``: review tool definitions that changed upstream.

Works on the state store named in the config (SQLite by default), so it runs beside a live
gateway; the gateway picks an accepted change up within seconds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable

import anyio

from gateway.config import Config
from gateway.core.clock import SystemClock
from gateway.state import open_store
from gateway.state.pins import Pin, StorePins


def upstream_names(config: Config, exposed: str) -> list[tuple[str, str]]:
    """(server, upstream tool) pairs an exposed name can stand for, renames undone."""
    sep = config.gateway.separator
    found: list[tuple[str, str]] = []
    for sid, cfg in config.servers.items():
        if cfg.namespace:
            prefix = f"{sid}{sep}"
            if not exposed.startswith(prefix):
                continue
            local = exposed[len(prefix) :]
        else:
            local = exposed
        originals = [orig for orig, new in cfg.rename.items() if new == local]
        found.append((sid, originals[0] if originals else local))
    return found


def _rows(pins: Iterable[Pin]) -> str:
    lines = [f"{'SERVER':<16} {'TOOL':<32} {'STATUS':<8} {'SINCE':<20} DIGEST"]
    for pin in pins:
        when = pin.changed_at if pin.status == "changed" else pin.first_seen
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when or 0))
        digest = pin.digest[:12] + (f" -> {pin.pending[:12]}" if pin.pending else "")
        lines.append(f"{pin.server:<16} {pin.tool:<32} {pin.status:<8} {stamp:<20} {digest}")
    return "\n".join(lines)


def cmd_pins(args: argparse.Namespace, config: Config) -> int:
    assert config.source is not None
    return anyio.run(_pins, args, config)


async def _pins(args: argparse.Namespace, config: Config) -> int:
    assert config.source is not None
    state = open_store(config.gateway.state, config.source.parent, SystemClock())
    try:
        store = StorePins(state)
        if args.pins_command == "list":
            pins = await store.all()
            print(_rows(pins) if pins else "no pins recorded yet (start the gateway once)")
            return 0
        accepted = []
        for server, tool in upstream_names(config, args.tool):
            pin = await store.accept(server, tool)
            if pin is not None:
                accepted.append(pin)
    finally:
        await state.close()
    if not accepted:
        print(f"{args.tool}: no pin found (see `interlock pins list`)")
        return 1
    for pin in accepted:
        print(f"accepted {pin.server}/{pin.tool}: now pinned at {pin.digest[:12]}")
    return 0
