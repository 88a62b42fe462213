"""Loops, circuit breakers and rate limits end to end, with the memory store and with Redis."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.support import (
    FIXTURE_SERVER,
    ROOT,
    Proc,
    free_port,
    gateway,
    gateway_error,
    kill_group,
    stdio_server_toml,
)

pytestmark = pytest.mark.anyio


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _example(sid: str, record: Path) -> str:
    return stdio_server_toml(
        sid,
        str(ROOT / "examples" / f"{sid}_server.py"),
        extra=f'env = {{ EXAMPLE_RECORD_FILE = "{record}" }}',
    )


def _policies(tmp: Path, text: str) -> None:
    (tmp / "policies").mkdir(exist_ok=True)
    (tmp / "policies" / "default.toml").write_text((ROOT / "policies" / "default.toml").read_text())
    (tmp / "policies" / "50-test.toml").write_text(text)


def _error(result: Any) -> dict[str, Any]:
    return gateway_error(result)


async def test_a_forever_pending_job_is_stopped_with_the_evidence(tmp_path: Path) -> None:
    record = tmp_path / "jobs.jsonl"
    _policies(
        tmp_path,
        '[[rules]]\nname = "polling"\nmatch = { tools = ["jobs__get_status"] }\n'
        'loops = { action = "block", max_identical_results = 3 }\n',
    )
    with gateway(_example("jobs", record), tmp_path) as gw:
        with anyio.fail_after(30):
            async with Client(gw.mcp_url, mode="legacy") as c:
                job = (await c.call_tool("jobs__start_job", {"kind": "export"})).structured_content["job_id"]
                for _ in range(3):
                    pending = await c.call_tool("jobs__get_status", {"job_id": job})
                    assert pending.structured_content["status"] == "pending"
                stopped = await c.call_tool("jobs__get_status", {"job_id": job})
        _, metrics = _metrics(gw)
    assert 'interlock_loops_detected_total{kind="stuck_polling"} 1.0' in metrics
    error = _error(stopped)
    assert error["code"] == "loop_detected"
    assert error["details"]["kind"] == "stuck_polling"
    assert error["details"]["count"] >= 3 and "span_s" in error["details"]
    assert len([r for r in _records(record) if r["tool"] == "get_status"]) == 3  # the 4th never reached it


async def test_a_flaky_api_trips_the_breaker_fails_fast_and_recovers(tmp_path: Path) -> None:
    # In-process, so that the test owns the gateway's clock: the break passes when the test moves
    # time, never by waiting. Everything else is real: MCP over HTTP from a real client, and the
    # flaky example upstream over stdio. Sleepers wait for the test to move time (sleep_waits), so
    # the supervisor's heartbeat and backoff do not spin.
    import socket

    import uvicorn

    from gateway.app import Gateway
    from gateway.config import load_config
    from gateway.core.clock import ManualClock

    record = tmp_path / "flaky.jsonl"
    _policies(
        tmp_path,
        '[[rules]]\nname = "flaky-breaker"\nmatch = { servers = ["flaky"] }\n'
        "breaker = { window_size = 4, minimum_calls = 4, failure_rate = 0.5, half_open_calls = 1, "
        "break_s = 0.5, max_break_s = 1 }\n",
    )
    (tmp_path / "servers.toml").write_text('[gateway]\nstate = "memory://"\n\n' + _example("flaky", record))
    clock = ManualClock(sleep_waits=True)
    gw = Gateway(load_config(tmp_path / "servers.toml"), clock=clock)
    # Bound and listening before the server starts: the client may connect at once.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(gw.http_app(), log_config=None, lifespan="on"))

    def reached() -> int:
        return len([r for r in _records(record) if r["tool"] == "place_order"])

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as c:
                await c.call_tool("flaky__set_mode", {"mode": "500", "count": 4})
                codes = []
                for qty in range(1, 8):  # distinct orders: the same failing call repeated would be a loop
                    result = await c.call_tool("flaky__place_order", {"symbol": "A", "qty": qty})
                    codes.append(_error(result)["code"])
                    if codes[-1] == "circuit_open":
                        fast = _error(result)
                        break
                # The calls that tripped it got their real error; then the circuit answered at once.
                assert (
                    codes[-1] == "circuit_open" and set(codes[:-1]) == {"upstream_error"} and len(codes) >= 3
                )
                assert 0 < fast["retry_after_s"] <= 1
                assert reached() == len(codes) - 1  # the refused call never reached the upstream
                # However long it takes in real time, the circuit stays open until the clock moves.
                still = await c.call_tool("flaky__place_order", {"symbol": "A", "qty": 50})
                assert _error(still)["code"] == "circuit_open"
                assert reached() == len(codes) - 1
                recovered = None
                trials = []
                for qty in range(60, 70):
                    clock.advance(fast["retry_after_s"])  # the break is over: the next call is a trial
                    result = await c.call_tool("flaky__place_order", {"symbol": "A", "qty": qty})
                    if not result.is_error:
                        recovered = result
                        break
                    # A half-open trial that meets the last 500 reopens it, for a longer break.
                    fast = _error(result)
                    trials.append(fast["code"])
                    assert fast["code"] in ("circuit_open", "upstream_error")
                    fast["retry_after_s"] = fast.get("retry_after_s") or 1
                metrics = gw.metrics.render().decode()
                heartbeats = clock.sleepers  # the supervisor's heartbeat waits on the test's clock
            server.should_exit = True
    assert recovered is not None, trials
    assert 'interlock_circuit_state{server="flaky",tool=""} 0.0' in metrics  # closed again
    assert heartbeats >= 1


def _metrics(gw: Proc) -> tuple[int, str]:
    from tests.support import http_get

    return http_get(f"{gw.url}/metrics")


# -- Redis: several gateways that behave as one -------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private Redis server, so a test may kill it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; .ci/run installs it")
    port = free_port()
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
            break
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        kill_group(proc)


TWO_GATEWAYS_POLICY = """
[[rules]]
name = "global-limit"
match = { tools = ["fs__echo"] }
rate_limits = [ { name = "global-echo", limit = 100, period_s = 3600, burst = 100, key = ["tool"] } ]
rate_limit_on_store_error = "open"

[[rules]]
name = "strict-add"
match = { tools = ["fs__add"] }
rate_limits = [ { name = "strict-add", limit = 1000, period_s = 1, burst = 1000, key = ["tool"] } ]
rate_limit_on_store_error = "closed"

[[rules]]
name = "breaker"
match = { servers = ["fs"] }
breaker = { window_size = 4, minimum_calls = 4, failure_rate = 0.5, break_s = 60, max_break_s = 60 }
"""


def _two_gateways(tmp: Path, url: str) -> tuple[Path, Path]:
    dirs = []
    for name in ("a", "b"):
        d = tmp / name
        d.mkdir()
        _policies(d, TWO_GATEWAYS_POLICY)
        dirs.append(d)
    return dirs[0], dirs[1]


def _shared_config(url: str) -> str:
    return f'[gateway]\nstate = "{url}"\n\n' + stdio_server_toml("fs", FIXTURE_SERVER, "--name", "fs")


async def test_two_gateways_share_one_global_rate_limit(tmp_path: Path, redis_url: tuple[str, Any]) -> None:
    url, _ = redis_url
    a_dir, b_dir = _two_gateways(tmp_path, url)
    with gateway(_shared_config(url), a_dir) as a, gateway(_shared_config(url), b_dir) as b:
        admitted = 0
        limited = 0

        async def agent(gw: Proc) -> None:
            nonlocal admitted, limited
            async with Client(gw.mcp_url, mode="legacy") as c:
                for i in range(100):
                    result = await c.call_tool("fs__echo", {"text": f"{gw.port}-{i}"})
                    if result.is_error:
                        refusal = _error(result)
                        assert (refusal["code"], refusal["details"]["guard"]) == (
                            "rate_limited",
                            "rate_limits",
                        )
                        limited += 1
                    else:
                        admitted += 1

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for gw in (a, b, a, b):
                    tg.start_soon(agent, gw)
        scraped = _metrics(a)[1] + _metrics(b)[1]
    assert 'interlock_rate_limited_total{guard="rate_limits",server="fs"' in scraped
    assert 'interlock_guard_refusals_total{code="rate_limited",guard="rate_limits",server="fs"' in scraped
    assert admitted + limited == 400
    assert abs(admitted - 100) <= 1, admitted  # one limit across both replicas, within 1%


async def test_two_gateways_see_each_others_open_circuit(tmp_path: Path, redis_url: tuple[str, Any]) -> None:
    url, _ = redis_url
    a_dir, b_dir = _two_gateways(tmp_path, url)
    with gateway(_shared_config(url), a_dir) as a, gateway(_shared_config(url), b_dir) as b:
        with anyio.fail_after(30):
            async with Client(a.mcp_url, mode="legacy") as ca:
                for kind in ("500", "502", "503", "504"):  # distinct failures, not one call repeated
                    code = _error(await ca.call_tool("fs__fail", {"kind": kind}))["code"]
                    assert code in ("upstream_error", "upstream_unavailable")
            async with Client(b.mcp_url, mode="legacy") as cb:
                seen = await cb.call_tool("fs__echo", {"text": "is it open?"})
    assert _error(seen)["code"] == "circuit_open"


async def test_when_redis_dies_calls_follow_their_policy_and_none_hangs(
    tmp_path: Path, redis_url: tuple[str, Any]
) -> None:
    url, redis = redis_url
    a_dir, _ = _two_gateways(tmp_path, url)
    with gateway(_shared_config(url), a_dir) as gw:
        with anyio.fail_after(60):
            async with Client(gw.mcp_url, mode="legacy") as c:
                assert not (await c.call_tool("fs__echo", {"text": "before"})).is_error
                kill_group(redis)
                for _ in range(5):
                    started = time.monotonic()
                    open_policy = await c.call_tool("fs__echo", {"text": "fail-open"})
                    closed_policy = await c.call_tool("fs__add", {"a": 1, "b": 2})
                    assert time.monotonic() - started < 5  # no call hangs on a dead store
                    assert not open_policy.is_error  # rate_limit_on_store_error = "open"
                    refused = _error(closed_policy)  # rate_limit_on_store_error = "closed"
                    assert (refused["code"], refused["details"]["guard"]) == (
                        "state_unavailable",
                        "rate_limits",
                    )
                    assert refused["retryable"] is True
    assert "unreachable" in gw.log()
