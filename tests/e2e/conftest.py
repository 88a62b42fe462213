"""One gateway, started as a user would start it, in front of fixture upstreams of every kind.

- ``fs``: the fixture server over stdio (either era; the gateway picks 2026-07-28),
- ``fl``: the fixture server over stdio, restricted to the 2025-11-25 handshake era,
- ``fx``: like ``fl``, but marked stateless, so the gateway may run one instance per client profile,
- ``fh``: the fixture server over Streamable HTTP,
each recording the calls it receives, so tests can prove what did or did not reach an upstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import FIXTURE_SERVER, Proc, gateway, http_fixture, http_server_toml, stdio_server_toml


@dataclass
class Stack:
    gateway: Proc
    records: dict[str, Path]
    tmp: Path

    def recorded(self, server: str) -> list[dict[str, Any]]:
        path = self.records[server]
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    records = {sid: tmp / f"{sid}.jsonl" for sid in ("fs", "fl", "fx", "fh")}
    with http_fixture(tmp, "--record", str(records["fh"]), name="fh") as upstream:
        config = (
            stdio_server_toml("fs", FIXTURE_SERVER, "--name", "fs", "--record", str(records["fs"]))
            + stdio_server_toml(
                "fl", FIXTURE_SERVER, "--name", "fl", "--era", "legacy", "--record", str(records["fl"])
            )
            + stdio_server_toml(
                "fx", FIXTURE_SERVER, "--name", "fx", "--era", "legacy", extra="stateless = true"
            )
            + http_server_toml("fh", upstream.mcp_url)
        )
        with gateway(config, tmp) as gw:
            yield Stack(gw, records, tmp)
