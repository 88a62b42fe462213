"""Upstreams that crash, hang or lie lose only what is broken; nothing is ever leaked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from tests.support import (
    FIXTURE_SERVER,
    INTERLOCK,
    free_port,
    gateway,
    http_get,
    kill_group,
    spawn,
    stdio_server_toml,
    wait_http,
)

pytestmark = pytest.mark.anyio


def _children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (read from /proc, no extra tools)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


async def test_an_upstream_that_crashes_is_restarted_and_serves_again(tmp_path: Path) -> None:
    config = stdio_server_toml(
        "up", FIXTURE_SERVER, "--name", "up", extra="restart = { initial_backoff_s = 0.1 }"
    )
    with gateway(config, tmp_path) as gw:
        with anyio.fail_after(30):
            async with Client(gw.mcp_url, mode="legacy") as c:
                first = await c.call_tool("up__crash", {})
                assert first.is_error
                assert first.structured_content["error"]["code"] == "upstream_unavailable"
                for attempt in range(200):  # the supervisor restarts it; the catalog comes back
                    # A new text each time: the same failing call repeated would (rightly) be a loop.
                    result = await c.call_tool("up__echo", {"text": f"again {attempt}"})
                    if not result.is_error:
                        break
                    await anyio.sleep(0.1)
        assert result.structured_content == {"text": f"again {attempt}"}
        _, body = http_get(f"{gw.url}/metrics")
        assert 'interlock_upstream_restarts_total{server="up"} 1.0' in body
        assert "up: reconnecting in" in gw.log()
        # The child's stderr is chatter (logged at debug), but its last lines are quoted when it fails.
        assert "up: connection lost; its stderr ended with: fixture up starting" in gw.log()


async def test_a_malformed_tool_is_excluded_and_the_others_stay(tmp_path: Path) -> None:
    config = stdio_server_toml("bad", FIXTURE_SERVER, "--name", "bad", "--malformed-tool")
    with gateway(config, tmp_path) as gw:
        with anyio.fail_after(20):
            async with Client(gw.mcp_url, mode="legacy") as c:
                names = {t.name for t in (await c.list_tools()).tools}
                echo = await c.call_tool("bad__echo", {"text": "still here"})
        assert "bad__echo" in names and "bad__whoami" in names
        assert "bad__broken" not in names
        assert echo.structured_content == {"text": "still here"}
        assert "bad: tool 'broken' is malformed and is not listed" in gw.log()


async def test_a_hanging_or_dead_upstream_loses_only_itself(tmp_path: Path) -> None:
    config = (
        stdio_server_toml("ok", FIXTURE_SERVER, "--name", "ok")
        + stdio_server_toml(
            "hangs", FIXTURE_SERVER, "--hang-on-list", extra="connect_timeout_s = 1\nrequired = false"
        )
        + stdio_server_toml("dead", "/nonexistent/server.py", extra="required = false")
    )
    with gateway(config, tmp_path) as gw:
        with anyio.fail_after(20):
            async with Client(gw.mcp_url, mode="legacy") as c:
                names = {t.name for t in (await c.list_tools()).tools}
                result = await c.call_tool("ok__echo", {"text": "fine"})
        assert "ok__echo" in names
        assert not any(n.startswith(("hangs__", "dead__")) for n in names)
        assert result.structured_content == {"text": "fine"}
        status, body = http_get(f"{gw.url}/readyz")
        assert status == 200, body  # only required upstreams count
        assert '"hangs":{"status":"down"' in body.replace(" ", "")


async def test_after_shutdown_no_upstream_process_remains(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "servers.toml"
    config.write_text(
        stdio_server_toml("a", FIXTURE_SERVER, "--name", "a")
        + stdio_server_toml("b", FIXTURE_SERVER, "--name", "b")
    )
    cmd = [*INTERLOCK, "serve", "--config", str(config), "--port", str(port)]
    with spawn(cmd, tmp_path / "gw.log") as gw:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=gw.proc)
        upstreams = _wait_for_children(gw.proc.pid, 2)
        assert len(upstreams) >= 2
        os.kill(gw.proc.pid, signal.SIGTERM)  # the way an orchestrator stops it
        gw.proc.wait(timeout=20)
        alive = _wait_until_gone(upstreams)
        assert alive == [], f"leaked upstream processes: {alive}\n{gw.log()}"


def _wait_for_children(pid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 20
    while len(_children_of(pid)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return _children_of(pid)


def _wait_until_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + 5
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _state(pid) not in ("Z", "gone")]
        time.sleep(0.05)
    return alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_kill_group_helper_reaps(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    kill_group(proc)
    assert proc.poll() is not None


async def test_readiness_follows_required_upstreams(tmp_path: Path) -> None:
    config = stdio_server_toml("ok", FIXTURE_SERVER, "--name", "ok") + stdio_server_toml(
        "needed", "/nonexistent/server.py", extra="connect_timeout_s = 2"
    )
    with gateway(config, tmp_path) as gw:
        assert http_get(f"{gw.url}/healthz")[0] == 200  # alive
        status, body = http_get(f"{gw.url}/readyz")
        assert status == 503  # but not ready: a required upstream is down
        detail = json.loads(body)["upstreams"]
        assert detail["needed"]["status"] == "down" and detail["needed"]["required"] is True
        assert detail["ok"]["status"] == "up"
