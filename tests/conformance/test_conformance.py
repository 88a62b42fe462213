"""The official MCP conformance suite, through the gateway, at both spec versions.

The fixture server passes the suite on its own; behind the gateway (``namespace = false``), over
stdio and over HTTP, it must pass the same scenarios. The suite's exclusions (the tasks extension
only) and its install live in ``scripts/conformance.sh``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, ROOT, free_port, gateway, spawn, wait_http

SERVER = str(ROOT / "tests" / "conformance" / "everything_server.py")
SCRIPT = str(ROOT / "scripts" / "conformance.sh")

pytestmark = pytest.mark.conformance


def _run_suite(url: str, tmp: Path) -> str:
    done = subprocess.run(
        ["bash", SCRIPT, url],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "CONFORMANCE_RESULTS_DIR": str(tmp / "results")},
        cwd=ROOT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    summary = re.search(r"^conformance: (\d+) passed, (\d+) failed$", output, re.MULTILINE)
    assert summary is not None and int(summary.group(1)) > 70 and summary.group(2) == "0", output[-3000:]
    return output


def test_through_the_gateway_over_stdio(tmp_path: Path) -> None:
    config = (
        f'[servers.everything]\ntransport = "stdio"\ncommand = "{PYTHON}"\n'
        f'args = ["{SERVER}", "--transport", "stdio"]\nnamespace = false\n'
        # Stateless: the gateway may run one instance per client era, so each era is served natively.
        "stateless = true\n"
    )
    with gateway(config, tmp_path) as gw:
        output = _run_suite(gw.mcp_url, tmp_path)
    assert "conformance 2025-11-25:" in output and "conformance 2026-07-28:" in output


def test_through_the_gateway_over_http(tmp_path: Path) -> None:
    port = free_port()
    cmd = [PYTHON, SERVER, "--transport", "http", "--port", str(port)]
    with spawn(cmd, tmp_path / "upstream.log") as upstream:
        wait_http(f"http://127.0.0.1:{port}/mcp", proc=upstream.proc)
        url = f"http://127.0.0.1:{port}/mcp"
        config = f'[servers.everything]\ntransport = "http"\nurl = "{url}"\nnamespace = false\n'
        with gateway(config, tmp_path) as gw:
            output = _run_suite(gw.mcp_url, tmp_path)
    assert "conformance 2025-11-25:" in output and "conformance 2026-07-28:" in output
