"""`interlock stdio` for stdio-only clients, and a third-party server from PyPI behind the gateway."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.support import FIXTURE_SERVER, PYTHON, ROOT, gateway, stdio_server_toml

pytestmark = pytest.mark.anyio

TIME_SERVER = f'[servers.time]\ntransport = "stdio"\ncommand = "{PYTHON}"\nargs = ["-m", "mcp_server_time"]\n'


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_the_gateway_serves_stdio_clients(tmp_path: Path, era: str) -> None:
    config = tmp_path / "servers.toml"
    config.write_text(stdio_server_toml("fs", FIXTURE_SERVER, "--name", "fs"))
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "gateway.cli", "stdio", "--config", str(config)], cwd=str(ROOT)
    )
    with anyio.fail_after(30):
        async with Client(params, mode=era) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            result = await c.call_tool("fs__echo", {"text": "over stdio"})
    assert "fs__echo" in names
    assert result.structured_content == {"text": "over stdio"}


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_a_third_party_server_from_pypi(tmp_path: Path, era: str) -> None:
    with gateway(TIME_SERVER, tmp_path) as gw:
        with anyio.fail_after(30):
            async with Client(gw.mcp_url, mode=era) as c:
                names = {t.name for t in (await c.list_tools()).tools}
                result = await c.call_tool("time__get_current_time", {"timezone": "Europe/Paris"})
                bad = await c.call_tool("time__get_current_time", {"timezone": "Not/AZone"})
    assert {"time__get_current_time", "time__convert_time"} <= names
    assert not result.is_error and "Europe/Paris" in result.content[0].text
    assert bad.is_error
