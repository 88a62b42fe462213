"""What the MCP Inspector (the TypeScript SDK's client) shows of a gateway error.

The Inspector validates ``structuredContent`` against the tool's ``outputSchema`` even on an
``isError`` result and, when that fails, prints only the schema violation. The gateway's error
code and hint must reach it, over Streamable HTTP, at both protocol eras. The Inspector and Node
22 are installed under ``.node/`` on first use by ``scripts/inspector.sh``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Proc, gateway, stdio_server_toml

SCRIPT = str(ROOT / "scripts" / "inspector.sh")
HINT = "Fix these arguments and call again: customer_id must match ^C[0-9]{6}$."
TOOL_ERROR_EXIT = 5
"""The Inspector CLI's exit status for a delivered ``isError: true`` result (1: it failed itself)."""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("inspector")
    config = stdio_server_toml("crm", str(ROOT / "examples" / "crm_server.py"))
    with gateway(config, tmp) as proc:
        yield proc


@pytest.fixture(scope="module")
def inspector_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Installed once per run (a no-op once .node/ has it); the Inspector's files go to a tmp home."""
    home = tmp_path_factory.mktemp("inspector-home")
    done = subprocess.run(
        ["bash", SCRIPT, "--install-only"], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return home


def _inspect(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "MCP_CATALOG_PATH": str(home / "catalog.json"),
        "MCP_CLIENT_CONFIG_PATH": str(home / "client.json"),
    }
    return subprocess.run(
        ["bash", SCRIPT, "--cli", *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_the_inspector_shows_the_error_code_and_hint(gw: Proc, inspector_home: Path, era: str) -> None:
    done = _inspect(
        inspector_home,
        gw.mcp_url,
        "--transport",
        "http",
        "--protocol-era",
        era,
        "--format",
        "json",
        "--method",
        "tools/call",
        "--tool-name",
        "crm__get_customer",
        "--tool-arg",
        f"customer_id=nope-{era}",
    )
    output = done.stdout + done.stderr
    assert "invalid_arguments" in output and HINT in output, output
    assert done.returncode == TOOL_ERROR_EXIT, output
    result: dict[str, Any] = json.loads(done.stdout)["result"]
    error = json.loads(result["content"][0]["text"])["error"]
    assert result["isError"] is True and result["_meta"]["interlock/error"] == error
    assert (error["code"], error["tool"]) == ("invalid_arguments", "crm__get_customer")
    assert error["hint"].startswith(HINT)
