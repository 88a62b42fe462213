"""Start-up and shutdown of `interlock serve` / `interlock stdio`, as a user runs them: what the log
says and when, the shipped config from any folder, a state store that is down at start, and a clean
SIGTERM."""

from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, types
from mcp.client.context import ClientRequestContext
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.support import (
    FIXTURE_SERVER,
    INTERLOCK,
    PYTHON,
    ROOT,
    Proc,
    free_port,
    gateway,
    gateway_error,
    kill_group,
    spawn,
    stdio_server_toml,
    wait_http,
)

pytestmark = pytest.mark.anyio

CHATTY = str(ROOT / "tests" / "fixtures" / "chatty_server.py")


def _wait_for(proc: Proc, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
    """Poll the log until ``pattern`` appears (the gateway's own pace, bounded), or fail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, proc.log(), re.MULTILINE)
        if found:
            return found
        if proc.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in the log:\n{proc.log()}")


def _policies(tmp: Path, text: str = "") -> None:
    (tmp / "policies").mkdir(exist_ok=True)
    (tmp / "policies" / "default.toml").write_text((ROOT / "policies" / "default.toml").read_text())
    (tmp / "policies" / "50-test.toml").write_text(text)


# -- 2: the shipped servers.toml, from anywhere --------------------------------------------------


def test_the_shipped_config_starts_every_example_from_another_folder_without_the_venv_on_path(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    # No venv on PATH, and a working directory with nothing of the project in it. The state file is
    # kept out of the checkout.
    env = {"PATH": "/usr/bin:/bin", "INTERLOCK_STATE": f"sqlite:///{tmp_path / 'state.db'}"}
    script = Path(PYTHON).parent / "interlock"  # the console script, as a user runs it
    launcher = [str(script)] if script.exists() else [PYTHON, "-m", "gateway.cli"]
    cmd = [*launcher, "serve", "--config", str(ROOT / "servers.toml"), "--port", str(port)]
    with spawn(cmd, tmp_path / "gw.log", env={**env, "PYTHONPATH": str(ROOT)}, cwd=elsewhere) as gw:
        gw.port = port
        wait_http(f"{gw.url}/healthz", proc=gw.proc)
        _wait_for(gw, r"ready: \d+ tools from 3 servers$")

        async def tools() -> list[str]:
            with anyio.fail_after(30):
                async with Client(gw.mcp_url) as c:
                    return sorted(t.name for t in (await c.list_tools()).tools)

        names = anyio.run(tools)
    assert {n.split("__")[0] for n in names} == {"crm", "jobs", "flaky"}, names
    assert "crm__refund" in names and "jobs__get_status" in names and "flaky__place_order" in names
    assert "ModuleNotFoundError" not in gw.log() and "No such file" not in gw.log()


# -- 3: where it listens, and whether it is ready --------------------------------------------------


LATE_UPSTREAM = """
import os, runpy, sys
if not os.path.exists({flag!r}):
    sys.exit("not yet: no flag file")
sys.argv = [{fixture!r}, "--name", "late"]
runpy.run_path({fixture!r}, run_name="__main__")
"""


def _late_config(tmp: Path) -> tuple[str, Path]:
    """A required upstream that fails until the test creates its flag file, and an optional one."""
    flag = tmp / "late.flag"
    script = tmp / "late.py"
    script.write_text(LATE_UPSTREAM.format(flag=str(flag), fixture=FIXTURE_SERVER))
    restart = "restart = { initial_backoff_s = 0.1, max_backoff_s = 0.3 }"
    config = (
        '[gateway]\nstate = "memory://"\n\n'
        + stdio_server_toml("late", str(script), extra=restart)
        + stdio_server_toml("fs", FIXTURE_SERVER, "--name", "fs")
    )
    return config, flag


def test_serve_says_where_it_listens_and_is_ready_only_when_its_required_upstreams_are(
    tmp_path: Path,
) -> None:
    config, flag = _late_config(tmp_path)
    with gateway(config, tmp_path) as gw:
        listening = _wait_for(gw, rf"listening on http://127\.0\.0\.1:{gw.port}/mcp$")
        waiting = _wait_for(gw, r"not ready: waiting for required upstream late \(down: .*not yet.*\)$")
        assert not re.search(r"\bready: ", gw.log()[: waiting.start()])  # nothing claimed it before
        assert listening.start() < waiting.start()
        # The container health check: alive, though not ready yet.
        config_path = str(tmp_path / "servers.toml")
        health = [*INTERLOCK, "health", "--config", config_path, "--port", str(gw.port)]
        assert subprocess.run(health, capture_output=True, timeout=30, cwd=ROOT).returncode == 0
        assert subprocess.run([*health, "--ready"], capture_output=True, timeout=30, cwd=ROOT).returncode == 1
        flag.touch()
        ready = _wait_for(gw, r"INFO interlock: ready: \d+ tools from 2 servers$")
        assert subprocess.run([*health, "--ready"], capture_output=True, timeout=30, cwd=ROOT).returncode == 0
    log = gw.log()
    assert listening.start() < ready.start()
    assert len(re.findall(r"INFO interlock: ready: ", log)) == 1  # said once, when it became so
    assert "gateway ready" not in log


async def test_stdio_says_it_serves_and_whether_it_is_ready(tmp_path: Path) -> None:
    config, flag = _late_config(tmp_path)
    flag.touch()
    (tmp_path / "servers.toml").write_text(config)
    errlog = tmp_path / "stdio.log"
    params = StdioServerParameters(
        command=PYTHON,
        args=[*INTERLOCK[1:], "stdio", "--config", str(tmp_path / "servers.toml")],
        cwd=str(ROOT),
    )
    with errlog.open("w") as err, anyio.fail_after(60):
        async with Client(stdio_client(params, errlog=err), mode="legacy") as c:
            assert any(t.name == "late__echo" for t in (await c.list_tools()).tools)
    log = errlog.read_text()
    assert re.search(r"listening on stdio$", log, re.MULTILINE), log
    assert re.search(r"ready: \d+ tools from 2 servers$", log, re.MULTILINE), log
    assert log.index("listening on stdio") < log.index("ready: ")


# -- 6: a clean shutdown ---------------------------------------------------------------------------


def test_sigterm_shuts_down_without_a_traceback(tmp_path: Path) -> None:
    # The default embedded store (SQLite) and pins: the background pin refresh must be stopped
    # before the store closes, whenever the signal lands.
    config = stdio_server_toml("fs", FIXTURE_SERVER, "--name", "fs")
    for attempt in range(6):
        run = tmp_path / f"run{attempt}"
        run.mkdir()
        with gateway(config, run) as gw:
            _wait_for(gw, r"ready: ")
            # Land the signal at a different point of the pin refresh period each time.
            time.sleep(0.35 * attempt)
            gw.proc.send_signal(signal.SIGTERM)
            gw.proc.wait(timeout=30)
        log = gw.log()
        assert "Traceback" not in log, log
        assert "could not be refreshed" not in log and "could not be swept" not in log, log


# -- 7: chatter stays at debug -----------------------------------------------------------------------


NOISE = {
    "list-change stream": r"cm: no list-change stream",
    "upstream stderr": r"stderr: chatty: starting",
    "roots refusal": r"cl sent roots/list with no single calling session",
}


def _chatty(tmp: Path, log_level: str | None) -> str:
    head = f'[gateway]\nstate = "memory://"\n{f"log_level = {log_level!r}" if log_level else ""}\n\n'
    return (
        head
        + stdio_server_toml("cm", CHATTY, str(tmp / "cm.events"), extra='protocol = "2026-07-28"')
        + stdio_server_toml("cl", CHATTY, str(tmp / "cl.events"), extra='protocol = "2025-11-25"')
    )


def _events(path: Path, *wanted: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = path.read_text().splitlines() if path.exists() else []
        if all(any(line.startswith(w) for line in seen) for w in wanted):
            return
        time.sleep(0.05)
    raise AssertionError(f"{path.name}: {wanted} did not all happen")


def _chatty_log(tmp: Path, log_level: str | None) -> str:
    with gateway(_chatty(tmp, log_level), tmp) as gw:
        _wait_for(gw, r"ready: ")
        # Wait until each piece of chatter has happened (the upstreams say so in their own files).
        _events(tmp / "cm.events", "starting", "listen refused")
        _events(tmp / "cl.events", "starting", "roots refused")
        if log_level == "debug":
            for pattern in NOISE.values():
                _wait_for(gw, pattern)
    return gw.log()  # read once the gateway has stopped: all it was going to say is there


def test_routine_upstream_chatter_is_quiet_by_default_and_logged_at_debug(tmp_path: Path) -> None:
    (tmp_path / "info").mkdir()
    (tmp_path / "debug").mkdir()
    quiet = _chatty_log(tmp_path / "info", None)
    for what, pattern in NOISE.items():
        assert not re.search(pattern, quiet), f"{what} logged at the default level:\n{quiet}"
    loud = _chatty_log(tmp_path / "debug", "debug")
    for what, pattern in NOISE.items():
        assert re.search(pattern, loud), f"{what} missing at debug"


def test_a_crashing_upstreams_last_stderr_lines_are_logged_by_default(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import no_such_module_here\n")
    config = '[gateway]\nstate = "memory://"\n\n' + stdio_server_toml(
        "broken", str(script), extra="restart = { initial_backoff_s = 5, max_backoff_s = 5 }"
    )
    with gateway(config, tmp_path) as gw:
        failed = _wait_for(gw, r"WARNING interlock.upstream: broken: connection failed .*$")
        waiting = _wait_for(gw, r"not ready: waiting for required upstream broken .*$")
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in failed.group(0)
    assert "no_such_module_here" in waiting.group(0)  # /readyz and the log name the cause


# -- 1: a state store that is down at start ----------------------------------------------------------


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; .ci/run installs it")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ping = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, timeout=5
        )
        if ping.stdout.strip() == "PONG":
            return proc
        time.sleep(0.05)
    kill_group(proc)
    pytest.fail("redis-server did not answer")


@contextmanager
def _redis_later(port: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            kill_group(proc)


STORE_DOWN_POLICY = """
[[rules]]
name = "open-echo"
match = { tools = ["fs__echo"] }
rate_limits = [ { name = "echo", limit = 1000, period_s = 1, burst = 1000, key = ["tool"] } ]
rate_limit_on_store_error = "open"

[[rules]]
name = "closed-add"
match = { tools = ["fs__add"] }
rate_limits = [ { name = "add", limit = 1000, period_s = 1, burst = 1000, key = ["tool"] } ]
rate_limit_on_store_error = "closed"

[[rules]]
name = "ask-a-human"
match = { tools = ["fs__whoami"] }
approval = { mode = "elicit", timeout_s = 120 }
"""


def _accept(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    raise AssertionError("the round trip is driven by hand in this test")


async def test_the_gateway_starts_while_redis_is_down_and_picks_it_up_when_it_answers(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0?fail_fast_ms=50"
    _policies(tmp_path, STORE_DOWN_POLICY)
    config = f'[gateway]\nstate = "{url}"\n\n' + stdio_server_toml("fs", FIXTURE_SERVER, "--name", "fs")
    with _redis_later(port) as redis, gateway(config, tmp_path) as gw:
        with anyio.fail_after(60):
            async with Client(gw.mcp_url, mode="2026-07-28", elicitation_callback=_accept) as c:
                assert not (await c.call_tool("fs__echo", {"text": "fail-open"})).is_error
                closed = gateway_error(await c.call_tool("fs__add", {"a": 1, "b": 2}))
                assert (closed["code"], closed["details"]["guard"]) == ("state_unavailable", "rate_limits")
                gated = gateway_error(await c.call_tool("fs__whoami", {}))
                assert gated["retryable"] and gated["details"]["guard"] == "approval"

                redis.append(await anyio.to_thread.run_sync(_redis_server, port))
                asked = await _until_asked(c)
        assert asked.request_state and "interlock_approval" in (asked.input_requests or {})
        assert gw.proc.poll() is None
    log = gw.log()
    assert log.count("approval signing secret not read") == 1  # said once, not at every retry
    assert log.count("tool pins could not be checked") == 1
    assert "Traceback" not in log


async def _until_asked(c: Client) -> types.InputRequiredResult:
    """Call the gated tool until the gateway, its store back, starts the approval round trip."""
    while True:
        first: Any = await c.session.call_tool("fs__whoami", {}, allow_input_required=True)
        if isinstance(first, types.InputRequiredResult):
            return first
        refused = gateway_error(first)
        assert (refused["code"], refused["details"]["guard"]) == ("state_unavailable", "approval"), first
        await anyio.sleep(0.05)  # the gateway notices the store on its next call


async def test_background_chores_stop_before_the_stores_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # In-process and deterministic: the gateway stops the moment it has started, while its chores
    # (the approvals sweep runs at once) have just been scheduled. None may touch a closed store.
    from gateway.app import Gateway
    from gateway.config import load_config

    (tmp_path / "servers.toml").write_text('[gateway]\nstate = "sqlite:///state.db"\n')
    gw = Gateway(load_config(tmp_path / "servers.toml"))
    with caplog.at_level(logging.DEBUG, logger="interlock"), anyio.fail_after(30):
        async with gw.running():
            pass
    failures = [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert not failures, [r.getMessage() for r in failures]
