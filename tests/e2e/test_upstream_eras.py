"""An upstream pinned to the 2025-11-25 era serves callers of both eras.

``protocol = "2025-11-25"`` in servers.toml makes the gateway connect with the initialize handshake
even to a server that speaks both eras (here the fixture server, whose SDK loop refuses any
request carrying the 2026-07-28 envelope on a handshake connection, as the spec's dual-era servers
do). A 2026-07-28 caller's request arrives with that envelope in ``_meta``; the gateway must not
carry it onto the 2025-11-25 connection, where the caller's protocol version, identity and
capabilities mean nothing (the connection's own were agreed at initialize).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from tests.e2e.raw import META, call, final, legacy_headers, modern_headers, open_session, post
from tests.support import FIXTURE_SERVER, Proc, gateway, http_fixture, http_server_toml, stdio_server_toml

pytestmark = pytest.mark.anyio

PINNED = 'protocol = "2025-11-25"'
SERVERS = ["ps", "ph"]  # pinned stdio, pinned HTTP


@dataclass
class Pinned:
    gateway: Proc
    session: str

    async def answer(self, message: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        async with httpx2.AsyncClient(timeout=30) as client:
            return final(await post(client, self.gateway.mcp_url, json.dumps(message), headers))


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pinned]:
    tmp = tmp_path_factory.mktemp("pinned")
    with http_fixture(tmp, name="ph") as upstream:
        config = stdio_server_toml("ps", FIXTURE_SERVER, "--name", "ps", extra=PINNED) + http_server_toml(
            "ph", upstream.mcp_url, extra=PINNED
        )
        with gateway(config, tmp) as gw:
            yield Pinned(gw, open_session(gw.mcp_url))


@pytest.mark.parametrize("server", SERVERS)
async def test_a_2026_caller_is_served_by_an_upstream_pinned_to_2025(pinned: Pinned, server: str) -> None:
    message = call(f"{server}__echo", {"text": "across eras"}, modern=True)
    answer = await pinned.answer(message, modern_headers(message))
    assert "result" in answer, answer
    assert answer["result"]["structuredContent"] == {"text": "across eras"}, answer


@pytest.mark.parametrize("server", SERVERS)
async def test_the_2026_envelope_does_not_reach_a_2025_connection(pinned: Pinned, server: str) -> None:
    message = call(f"{server}__whoami", {}, modern=True)
    message["params"]["_meta"]["example.com/trace"] = "kept"
    answer = await pinned.answer(message, modern_headers(message))
    assert "result" in answer, answer
    seen = answer["result"]["structuredContent"]
    assert seen["era"] == "legacy", seen
    assert not set(META) & set(seen["meta"]), seen["meta"]  # the caller's envelope stayed at the gateway
    assert seen["meta"].get("example.com/trace") == "kept", seen["meta"]  # the caller's own keys did not
    assert seen["client_info"]["name"] == "interlock", seen  # what the connection agreed at initialize


@pytest.mark.parametrize("server", SERVERS)
async def test_a_2025_caller_is_still_served(pinned: Pinned, server: str) -> None:
    answer = await pinned.answer(
        call(f"{server}__echo", {"text": "same era"}), legacy_headers(pinned.session)
    )
    assert answer["result"]["structuredContent"] == {"text": "same era"}, answer
