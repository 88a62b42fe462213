"""The official MCP conformance suite, through the gateway, at both spec versions.

The fixture server passes the suite on its own; behind the gateway (``namespace = false``), over
stdio and over HTTP, it must pass the same scenarios. Each transport runs twice:

- ``both``: the fixture serves both eras, so the gateway can give a 2025-11-25 client a 2025-11-25
  lane of its own (a stateless stdio process, an HTTP session) and each era is served natively;
- ``modern``: the fixture refuses the 2025-11-25 handshake (``--era modern``), so every 2025-11-25
  scenario is bridged onto the 2026-07-28 wire, where log messages flow only for a request that
  opted in and questions to the client ride ``input_required``. The stdio upstream is a single
  stateful process here, the way a plain stdio server is configured.

The suite's exclusions (the tasks extension only) and its install live in ``scripts/conformance.sh``.
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
eras = pytest.mark.parametrize("era", ["both", "modern"])


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


@eras
def test_through_the_gateway_over_stdio(tmp_path: Path, era: str) -> None:
    config = (
        f'[servers.everything]\ntransport = "stdio"\ncommand = "{PYTHON}"\n'
        f'args = ["{SERVER}", "--transport", "stdio", "--era", "{era}"]\nnamespace = false\n'
        # Stateless: the gateway may run one instance per client era, so each era is served natively.
        + ("stateless = true\n" if era == "both" else "")
    )
    with gateway(config, tmp_path) as gw:
        output = _run_suite(gw.mcp_url, tmp_path)
    assert "conformance 2025-11-25:" in output and "conformance 2026-07-28:" in output


@eras
def test_through_the_gateway_over_http(tmp_path: Path, era: str) -> None:
    port = free_port()
    cmd = [PYTHON, SERVER, "--transport", "http", "--port", str(port), "--era", era]
    with spawn(cmd, tmp_path / "upstream.log") as upstream:
        wait_http(f"http://127.0.0.1:{port}/mcp", proc=upstream.proc)
        url = f"http://127.0.0.1:{port}/mcp"
        config = f'[servers.everything]\ntransport = "http"\nurl = "{url}"\nnamespace = false\n'
        with gateway(config, tmp_path) as gw:
            output = _run_suite(gw.mcp_url, tmp_path)
    assert "conformance 2025-11-25:" in output and "conformance 2026-07-28:" in output
