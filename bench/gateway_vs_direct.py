"""Gateway vs direct: what routing an MCP tool call through Interlock costs, measured in one run.

    make bench
    .venv/bin/python -m bench.gateway_vs_direct [--calls 500] [--warmup 50] [--duration 5]
        [--count N] [--clients 16] [--rounds 4] [--eras 2025-11-25,2026-07-28] [--loadgen-procs 1]
        [--state memory://]

Starts `bench/trivial_server.py` (one `echo` tool, Streamable HTTP) and `interlock serve` in front
of it (`namespace = false`, so both expose `echo`), each as a subprocess in its own process group.
Every guard is on, as shipped (`policies/default.toml`), with one bench rule (`BENCH_RULES_TOML`)
that raises the per-client rate limit and the loop detector's per-session call budgets far above
what the benchmark makes; the state store is `--state` (`[gateway] state`, default memory://).
Every call has other arguments (`echo(text="hello <pid>-<n>")`), as a real workload does: the
same call repeated would be refused as a loop.
Then, for each downstream era (`mcp.Client(url, mode="legacy")` = 2025-11-25, `mode="2026-07-28"`):

- sequential: one client per path, calls interleaved direct/gateway/direct/... so drift on the
  machine hits both paths alike; `--warmup` calls each first, then `--calls` timed calls each.
- concurrent: `--clients` clients per path, each with its own connection, calling in a loop for
  `--duration` seconds per path (or `--count` calls per client), split into `--rounds` rounds
  that alternate direct/gateway (D G, G D, ...). Each round's clients connect and make one call
  before its clock starts. The load generator runs in `--loadgen-procs` separate processes
  (default 1), never in this process: see bench/README.md for why and what that does.

Prints ONE JSON document on stdout (progress goes to stderr). A benchmark, not a test: nothing is
asserted; the targets are reported as met or not.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
ERAS = {"2025-11-25": "legacy", "2026-07-28": "2026-07-28"}  # era -> mcp.Client(mode=...)
TOOL = "echo"
ARGS_TEMPLATE = {"text": "hello <pid>-<n>"}  # what the JSON reports; every call's text differs
_CALL_NUMBERS = itertools.count()
# The guards stay on; this only lifts the limits a benchmark's thousands of calls a second from one
# client would hit: the shipped per-client rate limit (50/s; same `name`, so it replaces it) and the
# loop detector's per-session budgets (a 2026-07-28 client without a session hint is one session).
BENCH_RULES_TOML = """\
# bench/gateway_vs_direct.py: a busy batch client, every guard still on.
[[rules]]
name = "bench-busy-client"
match = { servers = ["bench"] }
rate_limits = [{ name = "per-client", limit = 1000000, period_s = 1, burst = 1000000, key = ["client"] }]

[rules.loops]
max_calls_per_session = 100000000
max_calls_per_tool_per_session = 100000000
"""
CALL_TIMEOUT_S = 30.0  # a call slower than this counts as an error (a hang), not as a latency sample
TARGETS = {
    "issue_min_throughput_ratio": 0.40,
    "product_max_added_p50_ms": 0.25,
    "product_min_throughput_ratio": 0.90,
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def next_args() -> dict[str, str]:
    """Arguments no other call of this run has (unique across the load-generator processes too)."""
    return {"text": f"hello {os.getpid()}-{next(_CALL_NUMBERS)}"}


# ---------------------------------------------------------------------------------------------
# statistics


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(samples_s: Sequence[float]) -> dict[str, Any]:
    values = sorted(samples_s)
    if not values:  # every call failed
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    ms = 1000.0
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * ms, 3),
        "p90_ms": round(percentile(values, 90) * ms, 3),
        "p99_ms": round(percentile(values, 99) * ms, 3),
        "mean_ms": round(sum(values) / len(values) * ms, 3),
        "max_ms": round(values[-1] * ms, 3),
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (Linux /proc); NaN (reported as null) without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# the MCP client side (used by this process for the sequential phase, by the workers for the rest)


def _client(url: str, mode: str) -> Any:
    from mcp import Client

    # cache=None: tools/call is not cacheable anyway, this just keeps the client's work identical.
    return Client(url, mode=mode, read_timeout_seconds=CALL_TIMEOUT_S, cache=None)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """`Type: message` of the innermost failure, with the request URL and OS error when known."""
    leaf = _leaf(exc)
    text = f"{type(leaf).__name__}: {leaf}"
    request = getattr(leaf, "_request", None)  # httpx errors carry the request (property raises if unset)
    if request is not None:
        text += f" ({request.method} {request.url})"
    cause: BaseException | None = leaf
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            text += f" [errno {cause.errno} {os.strerror(cause.errno)}]"
            break
        cause = cause.__cause__ or cause.__context__
    return text[:300]


def _fatal(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt | SystemExit)


async def _timed_call(client: Any) -> tuple[float, str | None]:
    """One echo call: (seconds, error or None). Errors include isError results and hangs."""
    import anyio

    start = time.perf_counter()
    try:
        with anyio.fail_after(CALL_TIMEOUT_S + 5):
            result = await client.call_tool(TOOL, next_args())
    except Exception as exc:
        return time.perf_counter() - start, describe(exc)
    elapsed = time.perf_counter() - start
    if result.is_error:
        return elapsed, f"isError: {result.content!r}"[:200]
    return elapsed, None


@dataclass
class Tally:
    samples: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, elapsed: float, error: str | None) -> None:
        if error is None:
            self.samples.append(elapsed)
        else:
            self.error(error)

    def error(self, error: str) -> None:
        self.errors[error] = self.errors.get(error, 0) + 1

    def merge(self, other: Tally) -> None:
        self.samples.extend(other.samples)
        for error, n in other.errors.items():
            self.errors[error] = self.errors.get(error, 0) + n

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class PathTotal:
    """One path's concurrent rounds, added up."""

    elapsed: float = 0.0
    tally: Tally = field(default_factory=Tally)
    cpu: dict[str, float] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)


MAX_CLIENT_CRASHES = 10


async def sequential(
    direct_url: str, gateway_url: str, mode: str, calls: int, warmup: int
) -> dict[str, Tally]:
    """One client per path, calls interleaved so both paths see the same machine state.

    An SDK client does not survive some transport failures (a refused connection ends its
    session): such a crash is counted as an error of the path whose call was running, both
    clients are reopened, and the run goes on.
    """
    tallies = {"direct": Tally(), "gateway": Tally()}
    urls = {"direct": direct_url, "gateway": gateway_url}
    i, crashes, running = 0, 0, "direct"
    while i < calls:
        try:
            async with _client(direct_url, mode) as direct, _client(gateway_url, mode) as gateway:
                clients = {"direct": direct, "gateway": gateway}
                for _ in range(warmup if crashes == 0 else 1):
                    for running in clients:
                        await _timed_call(clients[running])
                while i < calls:
                    # Alternate who goes first, so neither path always follows the other.
                    for running in ("direct", "gateway") if i % 2 == 0 else ("gateway", "direct"):
                        tallies[running].add(*await _timed_call(clients[running]))
                    i += 1
        except BaseException as exc:
            if _fatal(exc):
                raise
            crashes += 1
            tallies[running].error(f"client crashed: {describe(exc)}")
            log(f"sequential: {running} client crashed ({describe(exc)}); reopening ({urls[running]})")
            if crashes > MAX_CLIENT_CRASHES:
                raise
            i += 1
    return tallies


async def _load_round(
    url: str,
    mode: str,
    n: int,
    duration: float,
    count: int | None,
    pids: dict[str, list[int]],
    barrier: Barrier,
) -> dict[str, Any]:
    """One round of `n` clients in this process, each in its own task with its own connection.

    Every client connects and makes one untimed call; then, once every worker process is ready
    (the barrier), all call in a loop for `duration` seconds (or `count` calls each). A client
    whose SDK session dies is counted as one error and stops; the others go on. The window, and
    the CPU time of `pids` and of this process, run from the barrier to the last client's last
    call, so connecting and disconnecting are not in them.
    """
    import anyio

    def cpu_now() -> dict[str, float]:
        now = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
        now["client"] = time.process_time()
        return now

    tally = Tally()
    ready, go = anyio.Event(), anyio.Event()
    waiting, active = n, 0
    start, end = 0.0, 0.0
    cpu_start: dict[str, float] = {}
    cpu_end: dict[str, float] = {}

    def arrived() -> None:
        nonlocal waiting
        waiting -= 1
        if waiting == 0:
            ready.set()

    def left() -> None:
        nonlocal active, end, cpu_end
        active -= 1
        if active == 0 and go.is_set():
            end, cpu_end = time.perf_counter(), cpu_now()

    async def one() -> None:
        nonlocal active
        joined = calling = False
        try:
            async with _client(url, mode) as client:
                await _timed_call(client)  # warm: a 2026 client fetches tools/list before its first call
                active += 1
                joined = calling = True
                arrived()
                await go.wait()
                done = 0
                deadline = start + duration
                while (done < count) if count is not None else (time.perf_counter() < deadline):
                    tally.add(*await _timed_call(client))
                    done += 1
                calling = False
                left()
        except BaseException as exc:
            if _fatal(exc):
                raise
            tally.error(f"client crashed: {describe(exc)}")
            if calling:
                left()
        finally:
            if not joined:
                arrived()

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
        with anyio.move_on_after(CALL_TIMEOUT_S * 2):
            await ready.wait()
        await anyio.to_thread.run_sync(barrier.wait)
        start, cpu_start = time.perf_counter(), cpu_now()
        go.set()
    if not cpu_end:  # every client failed before the round began
        end, cpu_end = time.perf_counter(), cpu_now()
    return {
        "elapsed_s": max(end - start, 1e-9),
        "samples": tally.samples,
        "errors": tally.errors,
        "cpu_s": {name: cpu_end[name] - cpu_start[name] for name in cpu_start},
    }


def loadgen_worker(conn: Connection, barrier: Barrier) -> None:
    """A load-generator process: runs one round per command received on `conn`, until None."""
    import anyio

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    while (command := conn.recv()) is not None:
        try:
            url, mode, n, duration, count, pids = command
            result = anyio.run(_load_round, url, mode, n, duration, count, pids, barrier)
        except BaseException as exc:
            result = {"fatal": f"load generator: {describe(exc)}"}
        conn.send(result)


class LoadGenerators:
    """`procs` persistent worker processes (spawned once, reused for every round)."""

    def __init__(self, procs: int) -> None:
        ctx = mp.get_context("spawn")
        self.barrier = ctx.Barrier(procs)
        self.workers: list[tuple[Any, Connection]] = []
        for _ in range(procs):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=loadgen_worker, args=(child, self.barrier), daemon=True)
            process.start()
            self.workers.append((process, parent))

    def round(
        self,
        url: str,
        mode: str,
        clients: int,
        duration: float,
        count: int | None,
        pids: dict[str, list[int]],
        timeout: float,
    ) -> tuple[float, Tally, dict[str, float]]:
        """One measured round against `url`: (elapsed seconds, the calls' outcomes, CPU seconds).

        CPU seconds: of each process group in `pids` over the first worker's window, and of all
        the load-generator processes ("client") over their own windows.
        """
        self.barrier.reset()
        n = len(self.workers)
        shares = [clients // n + (i < clients % n) for i in range(n)]
        for (_, conn), share in zip(self.workers, shares, strict=True):
            conn.send((url, mode, share, duration, count, pids))
        results = []
        for process, conn in self.workers:
            if not conn.poll(timeout):
                raise TimeoutError(f"load generator pid {process.pid} gave no answer within {timeout:.0f} s")
            results.append(conn.recv())
        fatal = [r["fatal"] for r in results if "fatal" in r]
        if fatal:
            raise RuntimeError(fatal[0])
        tally = Tally()
        for r in results:
            tally.merge(Tally(r["samples"], r["errors"]))
        cpu: dict[str, float] = dict(results[0]["cpu_s"])
        cpu["client"] = sum(r["cpu_s"]["client"] for r in results)
        return max(r["elapsed_s"] for r in results), tally, cpu

    def close(self) -> None:
        for _, conn in self.workers:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        for process, _ in self.workers:
            process.join(3)
            if process.is_alive():
                process.terminate()
                process.join(2)


# ---------------------------------------------------------------------------------------------
# subprocesses: the trivial upstream and the gateway


class Proc:
    """A subprocess in its own process group, stderr (and optionally stdout) to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, stdout_pipe: bool = False) -> None:
        self.name, self.log_path = name, log_path
        self._log: TextIO = log_path.open("w")
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            text=True,
            start_new_session=True,  # own process group: killpg reaches whatever it starts too
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self, with_log: bool = False) -> None:
        if self.popen.poll() is not None:
            detail = f"; its log, last lines:\n{self.tail()}" if with_log else ""
            raise RuntimeError(f"{self.name} {self.status()}{detail}")

    def tail(self, lines: int = 40) -> str:
        """The last lines of the log, without the per-request `httpx2: HTTP Request` INFO lines."""
        with contextlib.suppress(OSError):
            all_lines = self.log_path.read_text(errors="replace").splitlines()
            kept = [line for line in all_lines if "httpx2: HTTP Request:" not in line]
            dropped = len(all_lines) - len(kept)
            note = [f"({dropped} 'httpx2: HTTP Request' lines left out)"] if dropped else []
            return "\n".join(note + kept[-lines:])
        return ""

    def status(self) -> str:
        code = self.popen.poll()
        if code is None:
            return "running"
        if code < 0:  # this benchmark only signals its processes when it is finishing
            return f"was killed by {signal.Signals(-code).name}, not by this benchmark"
        return f"exited with {code}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        # A leader that is already gone was reaped by poll(), and its id may be reused: leave it be.
        self._log.close()


def start_upstream(workdir: Path) -> tuple[Proc, int]:
    argv = [sys.executable, "-m", "bench.trivial_server", "--port", "0"]
    proc = Proc("trivial server", argv, workdir / "upstream.log", stdout_pipe=True)
    assert proc.popen.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.popen.stdout.readline()
        if line.startswith("LISTENING "):
            return proc, int(line.split()[1])
        if not line:
            break
    proc.check_alive(with_log=True)
    raise RuntimeError(f"trivial server did not report its port; its log:\n{proc.tail()}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_gateway(workdir: Path, upstream_port: int, log_level: str | None, state: str) -> tuple[Proc, int]:
    port = free_port()
    config = workdir / "servers.toml"
    level = f'log_level = "{log_level}"\n' if log_level else ""
    policies = workdir / "policies"
    policies.mkdir()
    shutil.copy(ROOT / "policies" / "default.toml", policies / "default.toml")
    (policies / "90-bench.toml").write_text(BENCH_RULES_TOML)
    config.write_text(
        "[gateway]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        'policies = "policies"\n'
        f"state = {json.dumps(state)}\n"
        f"{level}"
        "\n[servers.bench]\n"
        'transport = "http"\n'
        f'url = "http://127.0.0.1:{upstream_port}/mcp"\n'
        "namespace = false\n"
    )
    interlock = Path(sys.executable).with_name("interlock")
    argv = [str(interlock), "serve", "--config", str(config), "--port", str(port)]
    proc = Proc("gateway", argv, workdir / "gateway.log")
    deadline = time.monotonic() + 30
    last = ""
    while time.monotonic() < deadline:
        proc.check_alive(with_log=True)
        try:
            # /healthz: the process serves HTTP; /readyz: the upstream is connected and listed.
            http_get(f"http://127.0.0.1:{port}/healthz")
            if json.loads(http_get(f"http://127.0.0.1:{port}/readyz")).get("ready"):
                return proc, port
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"gateway not ready after 30 s ({last}); log:\n{proc.tail()}")


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


class UpstreamStats:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/stats"

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(http_get(self.url))
        return data

    @staticmethod
    def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        def sub(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: v - a.get(k, 0) for k, v in b.items() if v - a.get(k, 0)}

        calls = after["tool_calls"] - before["tool_calls"]
        http = sub(before["http_requests"], after["http_requests"])
        modern = sub(before["modern_methods"], after["modern_methods"])
        total = sum(http.values())
        return {
            "tool_calls": calls,
            "http_requests": http,
            "http_requests_per_tool_call": round(total / calls, 3) if calls else None,
            "modern_methods": modern,
            "handshakes": modern.get("server/discover", 0)
            + after["legacy_sessionless_posts"]
            - before["legacy_sessionless_posts"],
            "new_connections": after["connections"] - before["connections"],
        }

    @staticmethod
    def total(diffs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"tool_calls": 0, "http_requests": {}, "modern_methods": {}, "handshakes": 0}
        out["new_connections"] = 0
        for d in diffs:
            for key in ("tool_calls", "handshakes", "new_connections"):
                out[key] += d[key]
            for key in ("http_requests", "modern_methods"):
                for k, v in d[key].items():
                    out[key][k] = out[key].get(k, 0) + v
        calls, total = out["tool_calls"], sum(out["http_requests"].values())
        out["http_requests_per_tool_call"] = round(total / calls, 3) if calls else None
        return out


# ---------------------------------------------------------------------------------------------
# the run


def git_state() -> dict[str, Any]:
    """Which gateway code ran: HEAD, and whether gateway/ had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return {
            "commit": git("rev-parse", "--short", "HEAD") or None,
            "gateway_dirty": bool(git("status", "--porcelain", "gateway")),
        }
    return {"commit": None, "gateway_dirty": None}


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def machine_info() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    for package in ("mcp", "interlock", "uvicorn", "httpx2"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[f"{package}_version"] = metadata.version(package)
    return info


def run_era(
    era: str,
    args: argparse.Namespace,
    direct_url: str,
    gateway_url: str,
    loadgen: LoadGenerators,
    upstream: UpstreamStats,
    pids: dict[str, list[int]],
    gateway: Proc,
) -> dict[str, Any]:
    import anyio

    mode = ERAS[era]
    log(f"{era}: sequential, {args.warmup} warm-up + {args.calls} calls per path, interleaved")
    seq = anyio.run(sequential, direct_url, gateway_url, mode, args.calls, args.warmup)
    direct_seq, gateway_seq = latency_summary(seq["direct"].samples), latency_summary(seq["gateway"].samples)

    urls = {"direct": direct_url, "gateway": gateway_url}
    rounds = 1 if args.count else args.rounds
    per_round = args.duration / rounds
    count = math.ceil(args.count / rounds) if args.count else None
    timeout = (count * 2 if count else per_round) + 120
    what = f"{args.count} calls per client" if args.count else f"{args.duration:g} s"
    log(f"{era}: concurrent, {args.clients} clients per path, {what} per path in {rounds} alternating rounds")
    totals = {path: PathTotal() for path in urls}
    for r in range(rounds):
        # D G, G D, D G...: background load and drift hit both paths alike.
        for path in ("direct", "gateway") if r % 2 == 0 else ("gateway", "direct"):
            gateway.check_alive()
            before = upstream.snapshot()
            elapsed, tally, cpu = loadgen.round(
                urls[path], mode, args.clients, per_round, count, pids, timeout
            )
            total = totals[path]
            total.seen.append(UpstreamStats.diff(before, upstream.snapshot()))
            total.elapsed += elapsed
            total.tally.merge(tally)
            for name, seconds in cpu.items():
                total.cpu[name] = total.cpu.get(name, 0.0) + seconds

    concurrent: dict[str, Any] = {}
    for path, total in totals.items():
        tally, elapsed = total.tally, total.elapsed
        seen = UpstreamStats.total(total.seen)
        in_window = max(len(tally.samples) + tally.error_count, 1)
        concurrent[path] = {
            "calls": len(tally.samples) + tally.error_count,
            "elapsed_s": round(elapsed, 3),
            "calls_per_s": round(len(tally.samples) / elapsed, 1) if elapsed > 0 else 0.0,
            "errors": tally.error_count,
            "error_kinds": tally.errors,
            "latency": latency_summary(tally.samples),
            # CPU time each process used inside this path's timed windows, per call made in them.
            # The gateway idles during the direct rounds, so it is left out there.
            "cpu_ms_per_call": {
                name: None if math.isnan(seconds) else round(seconds * 1000 / in_window, 3)
                for name, seconds in total.cpu.items()
                if name != "gateway" or path == "gateway"
            },
            # Everything the upstream saw during these rounds, clients' connect and warm-up included.
            "upstream_seen": seen,
        }
        if tally.error_count:
            log(f"{era}: {path}: {tally.error_count} errors: {tally.errors}")

    d_tput, g_tput = concurrent["direct"]["calls_per_s"], concurrent["gateway"]["calls_per_s"]
    ratio = round(g_tput / d_tput, 3) if d_tput else None

    def added(key: str) -> float | None:
        if gateway_seq[key] is None or direct_seq[key] is None:
            return None
        return round(float(gateway_seq[key]) - float(direct_seq[key]), 3)

    added_p50, added_p99 = added("p50_ms"), added("p99_ms")
    # Seen by the upstream while only the gateway talked to it (16 downstream clients calling): a
    # per-call handshake would show as ~1 initialize/server/discover per tool call. The gateway's own
    # heartbeat (a server/discover every so often) is the only one expected; so is ~1 HTTP request
    # per tool call.
    via_gateway = concurrent["gateway"]["upstream_seen"]
    served = max(via_gateway["tool_calls"], 1)
    no_per_call_handshake = (
        via_gateway["handshakes"] / served < 0.01 and (via_gateway["http_requests_per_tool_call"] or 0) < 1.05
    )
    return {
        "direct_p50_ms": direct_seq["p50_ms"],
        "direct_p99_ms": direct_seq["p99_ms"],
        "gateway_p50_ms": gateway_seq["p50_ms"],
        "gateway_p99_ms": gateway_seq["p99_ms"],
        "added_p50_ms": added_p50,
        "added_p99_ms": added_p99,
        "throughput_direct_calls_per_s": d_tput,
        "throughput_gateway_calls_per_s": g_tput,
        "throughput_ratio_gateway_over_direct": ratio,
        "errors": seq["direct"].error_count
        + seq["gateway"].error_count
        + concurrent["direct"]["errors"]
        + concurrent["gateway"]["errors"],
        "targets": {
            "issue_no_per_call_handshake": no_per_call_handshake,
            "issue_throughput_ratio_ge_0.40": ratio is not None
            and ratio >= TARGETS["issue_min_throughput_ratio"],
            "product_added_p50_le_0.25_ms": added_p50 is not None
            and added_p50 <= TARGETS["product_max_added_p50_ms"],
            "product_throughput_ratio_ge_0.90": ratio is not None
            and ratio >= TARGETS["product_min_throughput_ratio"],
        },
        "detail": {
            "sequential": {
                "direct": direct_seq,
                "gateway": gateway_seq,
                "errors": {"direct": seq["direct"].errors, "gateway": seq["gateway"].errors},
            },
            "concurrent": concurrent,
        },
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500, help="timed sequential calls per path (500)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed sequential calls per path first (50)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per concurrent phase (5)")
    parser.add_argument(
        "--count", type=int, help="calls per client per concurrent phase, instead of --duration"
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="concurrent clients, one connection each (16)"
    )
    parser.add_argument(
        "--eras", default=",".join(ERAS), help=f"comma-separated, from {', '.join(ERAS)} (default: both)"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="concurrent rounds per path, alternating direct/gateway (4)"
    )
    parser.add_argument(
        "--loadgen-procs", type=int, default=1, help="processes sharing the concurrent clients (1)"
    )
    parser.add_argument(
        "--state",
        default="memory://",
        help="the gateway's [gateway] state: memory:// (default), sqlite:///bench.db (in the temporary "
        "folder), redis://127.0.0.1:6379/15?prefix=bench: (its keys are left in place)",
    )
    parser.add_argument(
        "--gateway-log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: the gateway's own",
    )
    args = parser.parse_args(argv)
    args.eras = [e.strip() for e in args.eras.split(",") if e.strip()]
    for era in args.eras:
        if era not in ERAS:
            parser.error(f"unknown era {era!r}; expected one of {', '.join(ERAS)}")
    if (
        min(args.calls, args.clients, args.loadgen_procs, args.rounds) < 1
        or args.warmup < 0
        or args.duration <= 0
    ):
        parser.error(
            "--calls, --clients, --rounds, --loadgen-procs must be >= 1, --warmup >= 0, --duration > 0"
        )
    if args.loadgen_procs > args.clients:
        parser.error("--loadgen-procs cannot exceed --clients")
    return args


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # `kill` cleans up like Ctrl-C does
    started = time.monotonic()
    load_before = load_average()
    code = git_state()
    procs: list[Proc] = []
    loadgen: LoadGenerators | None = None
    gateway: Proc | None = None
    with tempfile.TemporaryDirectory(prefix="interlock-bench-") as tmp:
        workdir = Path(tmp)
        try:
            log("starting trivial server, gateway and load generator")
            loadgen = LoadGenerators(args.loadgen_procs)  # spawns while the servers start
            upstream, upstream_port = start_upstream(workdir)
            procs.append(upstream)
            gateway, gateway_port = start_gateway(workdir, upstream_port, args.gateway_log_level, args.state)
            procs.append(gateway)
            direct_url = f"http://127.0.0.1:{upstream_port}/mcp"
            gateway_url = f"http://127.0.0.1:{gateway_port}/mcp"
            pids = {"upstream": [upstream.pid], "gateway": [gateway.pid]}
            stats = UpstreamStats(upstream_port)
            eras = {
                era: run_era(era, args, direct_url, gateway_url, loadgen, stats, pids, gateway)
                for era in args.eras
            }
            gateway.check_alive()
            gateway_log = gateway.log_path.read_text(errors="replace").splitlines()
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            if interrupted:
                log("interrupted")
            else:
                leaf = _leaf(exc)
                traceback.print_exception(exc, file=sys.stderr)
                log(f"failed: {type(leaf).__name__}: {leaf}")
            if gateway is not None and not interrupted:
                log(f"gateway {gateway.status()}; its log, last lines:\n{gateway.tail()}")
            return 130 if interrupted else 1
        finally:
            if loadgen is not None:
                loadgen.close()
            for proc in reversed(procs):
                proc.stop()

    problems = [
        line for line in gateway_log if " WARNING " in line or " ERROR " in line or "Traceback" in line
    ]
    # Upstream connection events (lanes up, heartbeats failing...): which upstream session served whom.
    upstream_events = [line for line in gateway_log if "interlock.upstream:" in line]
    errors = {era: result["errors"] for era, result in eras.items()}
    failed = sum(errors.values()) > 0
    document = {
        "benchmark": "gateway_vs_direct",
        "ok": not failed,
        "errors_total": sum(errors.values()),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code": code,
        "machine": machine_info()
        | {"load_average_1_5_15_min": {"before": load_before, "after": load_average()}},
        "settings": {
            "calls": args.calls,
            "warmup": args.warmup,
            "duration_s": None if args.count else args.duration,
            "count_per_client": args.count,
            "clients": args.clients,
            "rounds": 1 if args.count else args.rounds,
            "loadgen_procs": args.loadgen_procs,
            "gateway_log_level": args.gateway_log_level or "default",
            "tool": TOOL,
            "arguments": ARGS_TEMPLATE,
            "state": args.state.split("@")[-1],
            "policies": ["policies/default.toml (copied)", "90-bench.toml (BENCH_RULES_TOML)"],
            "upstream": "bench/trivial_server.py over Streamable HTTP",
        },
        "eras": eras,
        "gateway_log": {
            "lines": len(gateway_log),
            "warnings_or_errors": len(problems),
            "first_problems": problems[:5],
            "upstream_events": upstream_events[:20],
        },
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(document, indent=2))
    if failed:
        for era, result in eras.items():
            seq = result["detail"]["sequential"]["errors"]
            conc = {p: result["detail"]["concurrent"][p]["error_kinds"] for p in ("direct", "gateway")}
            if result["errors"]:
                log(f"{era}: {result['errors']} errors; sequential {seq}; concurrent {conc}")
        log(f"FAILED: {sum(errors.values())} calls errored ({errors}); the numbers above are not valid")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
