"""Guards overhead: what the guards add to one tool call, measured in process.

    make bench
    .venv/bin/python -m bench.guards_overhead [--calls 20000] [--batches 20] [--warmup 2000]
        [--attribution-calls 5000] [--state memory://] [--skip-unreachable] [--profile]

No network, no SDK, no upstream: the chain ends in an async function that returns a fixed result,
so what is timed is the guards' own cost. Three pipelines are built the way ``gateway.app`` builds
the real one, with ``gateway.pipeline``: ``fold(build_guards(GuardDeps(...)), terminal, observer)``:

- bare: no guards;
- full: every guard ``build_guards(GuardDeps(...))`` builds, with a real ``PolicySet`` loaded
  from a temporary folder (the shipped ``policies/default.toml`` plus a rule file that turns on,
  for the tool called, argument constraints, a reminder, a hint override, ``idempotent = true``, a
  timeout and a reference check, and gives the client a large rate limit), a ``PinBook`` on a
  ``MemoryPinStore``, the state store ``--state`` names (``gateway.state.open_store``: memory by
  default, ``sqlite:///file.db`` or ``redis://host:6379/15``), a ``SystemClock`` and a lookup
  runner that runs the lookup tool through the full pipeline (its answer is cached after the first call);
- issue3: the same list keeping only the guards issue 3 delivered (``ISSUE_3_GUARDS``), in their
  order: the pipeline issue 3's bar is about (within 0.2 ms p50 of bare).

Each pipeline gets ``--warmup`` untimed calls, then ``--calls`` timed calls, sequential, split into
``--batches`` batches in rotating order (bare/issue3/full, issue3/full/bare, ...) so drift on the
machine hits all alike. Each call is timed with ``time.perf_counter_ns`` around
``await pipeline(call)``; the ``ToolCall`` is built (as ``ToolEntry.call`` builds it) before the
clock starts, and the event loop turns once (untimed) after each call, as a server's loop does
between requests. Calls come in sessions of ``CALLS_PER_SESSION``, no two of a session alike, so the
loop detector has a history to judge and never refuses.

Per-guard attribution: the chain is rebuilt with the first k guards of ``build_guards`` (k = 0
is bare, the last k is full), each chain timed the same way (``--attribution-calls`` each, batches
in rotating order), and each guard's increment is the difference of consecutive p50s: what adding
that guard, in its place, added. (Means are left out: on a busy machine a preempted call adds
milliseconds to whichever chain it lands in.)

Prints ONE JSON document on stdout (progress goes to stderr). ``--profile`` instead runs the full
pipeline under cProfile and prints the top functions to stderr. A benchmark, not a test: the 0.2 ms
target is reported, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import gc
import io
import json
import logging
import pstats
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import anyio
import anyio.lowlevel

from bench.gateway_vs_direct import git_state, load_average, machine_info, percentile
from gateway.approvals import ApprovalService
from gateway.approvals.gate import ApprovalGate
from gateway.approvals.rounds import Rounds
from gateway.catalog import ToolEntry, tool_digest
from gateway.config import ApprovalSettings, PolicyContext, PolicySet
from gateway.config.units import ExplainView
from gateway.core import Caller, CallNext, SystemClock, ToolCall, ToolResult
from gateway.downstream.caller import new_request_id
from gateway.guards.pinning import PINNING, PinBook, SeenTool
from gateway.guards.schemas import SchemaCache
from gateway.guards.validation import VALIDATION, ArgumentValidation
from gateway.observe.metrics import Metrics
from gateway.observe.observer import observer
from gateway.observe.recent import RecentCalls
from gateway.pipeline import UNITS, GuardDeps, NamedGuard, build_guards, fold, load_policies
from gateway.state import MemoryPinStore, StateStore, open_store

ROOT = Path(__file__).resolve().parent.parent
TARGET_MAX_ADDED_P50_US = 200.0  # issue 3: all guards on, within 0.2 ms p50 of the bare pipeline
ISSUE_3_GUARDS = (
    "resolve",
    "rewrite",
    "reminders",
    "result_size_cap",
    "output_validation",
    "access",
    "pinning",
    "argument_validation",
    "references",
    "retry",
    "timeout",
    "classify",
)
"""The guards issue 3 delivered (by stage name), whose cost its bar is about; later guards are
measured too."""
STATE_GUARDS = ("loops", "rate_limits", "breaker", "concurrency")
"""Issue 4's guards: they keep their state in the store ``--state`` names."""
ROUND_TRIPS = {
    # Network round trips per store operation (docs/state.md): a Redis update reads (HMGET), then
    # writes with a compare-and-set script; every other operation is one command or script. SQLite
    # runs every operation as one transaction in a worker thread; memory has none.
    "redis": {"gcra": 1, "update": 2, "get": 1, "acquire": 1, "release": 1},
}
CALLS_PER_SESSION = 100
"""Each session makes this many calls, each with other arguments: busy, and never a loop (the
loop detector's per-session budgets and repeat thresholds are not reached)."""

SERVER = "crm"
SEP = "__"

# The tool called: setting a credit limit is idempotent (it sets, it does not add), so the policy
# may mark it so and the Retry guard takes its retrying path.
TOOL: dict[str, Any] = {
    "name": "set_credit_limit",
    "title": "Set credit limit",
    "description": "Set a customer's credit limit. The new limit replaces the old one.",
    "inputSchema": {
        "type": "object",
        "properties": {
            "customer_id": {
                "type": "string",
                "pattern": "^C[0-9]{6}$",
                "description": "The CRM customer id, e.g. C004211.",
            },
            "limit": {"type": "number", "minimum": 0, "maximum": 100000, "description": "New limit."},
            "currency": {"type": "string", "enum": ["EUR", "USD", "GBP", "CHF"]},
            "note": {"type": "string", "maxLength": 500, "description": "Why, for the audit trail."},
        },
        "required": ["customer_id", "limit", "currency"],
        "additionalProperties": False,
    },
    "outputSchema": {
        "type": "object",
        "properties": {
            "customer_id": {"type": "string"},
            "credit_limit": {"type": "number"},
            "status": {"type": "string", "enum": ["applied", "pending_review"]},
        },
        "required": ["customer_id", "credit_limit", "status"],
        "additionalProperties": False,
    },
    "annotations": {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": True},
}
ARGS: dict[str, Any] = {
    "customer_id": "C004211",
    "limit": 2500.0,
    "currency": "EUR",
    "note": "Raised after the Q3 review; payment history clean.",
}
STRUCTURED: dict[str, Any] = {"customer_id": "C004211", "credit_limit": 2500.0, "status": "applied"}

# The reference check's lookup tool; it runs through the full pipeline like any call.
LOOKUP: dict[str, Any] = {
    "name": "get_customer",
    "description": "Fetch one customer by id.",
    "inputSchema": {
        "type": "object",
        "properties": {"customer_id": {"type": "string", "pattern": "^C[0-9]{6}$"}},
        "required": ["customer_id"],
    },
    "outputSchema": {
        "type": "object",
        "properties": {
            "customer_id": {"type": "string"},
            "name": {"type": "string"},
            "tier": {"type": "string", "enum": ["standard", "gold"]},
        },
        "required": ["customer_id", "name"],
    },
    "annotations": {"readOnlyHint": True},
}
LOOKUP_STRUCTURED: dict[str, Any] = {"customer_id": "C004211", "name": "Ada Lovelace Ltd", "tier": "gold"}

RULES_TOML = f"""\
# What a production policy turns on for one write tool (bench/guards_overhead.py).
[[rules]]
name = "crm-credit-limits"
match = {{ servers = ["{SERVER}"], tools = ["{TOOL["name"]}"] }}
idempotent = true             # it sets, it does not add: safe to retry
timeout_s = 10
reminder = "Limits above 10000 need a manager's sign-off; never promise one to the customer."
# A busy client's budget: the shipped per-client limit (50/s) would refuse this benchmark.
rate_limits = [{{ name = "per-client", limit = 1000000, period_s = 1, burst = 1000000 }}]

[rules.arguments]             # on top of the tool's own inputSchema
customer_id = {{ pattern = "^C[0-9]{{6}}$" }}
limit = {{ minimum = 0, maximum = 50000 }}
note = {{ min_length = 3, max_length = 280 }}

[rules.hints]
upstream_timeout = "The CRM is slow. Wait a minute, then check the limit with crm__get_customer."

[[rules.references]]
argument = "customer_id"
tool = "{SERVER}{SEP}{LOOKUP["name"]}"
arguments = {{ customer_id = "args.customer_id" }}
search_tool = "{SERVER}{SEP}search_customers"
ttl_s = 86400                 # a day: the benchmark measures the cache hit, never an expiry
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# the pipelines


def entry_for(raw: Mapping[str, Any]) -> ToolEntry:
    """The catalog entry, as ``Catalog._tool_entry`` makes it for a namespaced server."""
    exposed = f"{SERVER}{SEP}{raw['name']}"
    return ToolEntry(SERVER, str(raw["name"]), exposed, {**raw, "name": exposed}, tool_digest(raw))


def result_for(structured: Mapping[str, Any]) -> ToolResult:
    """What an SDK server sends for a structured result: the JSON as text, and structuredContent."""
    return ToolResult.of_json(dict(structured))


@dataclass
class Setup:
    policies: PolicySet
    entry: ToolEntry
    lookup_entry: ToolEntry
    terminal: CallNext
    pins: PinBook
    clock: SystemClock
    state_url: str = "memory://"
    state_base: Path = ROOT
    """Relative ``sqlite:///`` paths are relative to this (a temporary folder)."""
    stores: list[StateStore] = field(default_factory=list)
    wrap_store: Callable[[StateStore], StateStore] | None = None
    full: CallNext | None = None
    """The full pipeline, which the lookup runner calls (set once built)."""
    lookup_calls: int = 0
    lookup_compilations: dict[int, int] = field(default_factory=dict)
    """Schema compilations that happened inside lookups, per ``id()`` of the SchemaCache."""
    caches: list[SchemaCache] = field(default_factory=list)
    calls_made: int = 0

    async def run_lookup(self, exposed_name: str, arguments: Mapping[str, Any], caller: Caller) -> ToolResult:
        """``Gateway.run_lookup``: the lookup tool, through the same (full) pipeline."""
        assert self.full is not None and exposed_name == self.lookup_entry.exposed_name
        before = {id(cache): cache.compilations for cache in self.caches}
        self.lookup_calls += 1
        try:
            return await self.full(self.lookup_entry.call(arguments, caller, new_request_id()))
        finally:
            for cache in self.caches:
                done = cache.compilations - before.get(id(cache), 0)
                self.lookup_compilations[id(cache)] = self.lookup_compilations.get(id(cache), 0) + done

    def guards(self) -> list[NamedGuard]:
        """Everything ``build_guards`` builds, each list with its own state (as a fresh gateway)."""
        store = self.open_store()
        approvals = ApprovalService(store, self.clock)
        # No rule asks for approval here: this measures what the gate costs every other call.
        gate = ApprovalGate(
            approvals, self.clock, ApprovalSettings(), decide_url=lambda i: i, rounds=Rounds(approvals)
        )
        deps = GuardDeps(
            resolver=self.policies.resolve_call,
            pins=self.pins,
            lookup=self.run_lookup,
            clock=self.clock,
            store=store,
            approval=gate,
        )
        guards = build_guards(deps)
        cache = schema_cache(guards)
        if cache is not None:
            self.caches.append(cache)
        return guards

    def open_store(self) -> StateStore:
        """A store on ``--state``, as the gateway opens it. For memory, each guard list gets its own
        (as a fresh gateway); SQLite and Redis stores share one file or database and prefix."""
        store = open_store(self.state_url, self.state_base, self.clock)
        self.stores.append(store)
        return self.wrap_store(store) if self.wrap_store else store

    def pipeline(self, guards: Sequence[NamedGuard]) -> CallNext:
        return fold(guards, self.terminal, observer(Metrics(), RecentCalls()))

    def make_call(self) -> ToolCall:
        """The next call: a fresh arguments dict, as the JSON-RPC layer hands it over; a new
        session every ``CALLS_PER_SESSION`` calls, and no two calls of a session alike."""
        n = self.calls_made
        self.calls_made += 1
        caller = Caller(
            principal="support-bot",
            session_key=f"support-bot/3f6c2a9e-{n // CALLS_PER_SESSION:08d}",
            client_name="claude-code",
            client_version="2.1.0",
            protocol_version="2026-07-28",
            capabilities={"sampling": {}, "elicitation": {}},
        )
        arguments = {**ARGS, "limit": ARGS["limit"] + n % CALLS_PER_SESSION}
        return self.entry.call(arguments, caller, new_request_id())


def schema_cache(guards: Sequence[NamedGuard]) -> SchemaCache | None:
    """The compiled-validator cache ``build_guards`` shares between argument and output validation."""
    return next((g.schemas for _, g in guards if isinstance(g, ArgumentValidation)), None)


def issue_3(guards: Sequence[NamedGuard]) -> list[NamedGuard]:
    return [(name, guard) for name, guard in guards if name in ISSUE_3_GUARDS]


async def build_setup(policy_dir: Path, state_url: str = "memory://", state_base: Path = ROOT) -> Setup:
    shutil.copy(ROOT / "policies" / "default.toml", policy_dir / "default.toml")
    (policy_dir / "50-credit.toml").write_text(RULES_TOML)
    policies = load_policies(policy_dir)
    entry, lookup_entry = entry_for(TOOL), entry_for(LOOKUP)
    results = {TOOL["name"]: result_for(STRUCTURED), LOOKUP["name"]: result_for(LOOKUP_STRUCTURED)}

    async def terminal(call: ToolCall) -> ToolResult:
        return results[call.tool]  # the upstream answered at once: only the gateway's cost is left

    clock = SystemClock()
    pins = PinBook(MemoryPinStore(), clock)
    seen = [SeenTool(e.server, e.upstream_name, e.exposed_name, e.digest) for e in (entry, lookup_entry)]
    await pins.reconcile(
        seen,
        lambda t: (
            policies.resolve(PolicyContext(server=t.server, tool=t.tool, exposed=t.exposed)).of(PINNING).mode
        ),
    )
    return Setup(policies, entry, lookup_entry, terminal, pins, clock, state_url, state_base)


def policy_summary(setup: Setup) -> dict[str, Any]:
    """What the call runs under, to show every guard has work to do: each unit's explain rows."""
    call = setup.make_call()
    policy = setup.policies.resolve_call(call)
    view = ExplainView(policy, call.server, call.tool, call.annotations)
    rows = [row for unit in UNITS for row in unit.rows(policy.of(unit), view)]
    return {
        "files": [path.name for path in setup.policies.files],
        "rules_applied": list(policy.rules),
        "resolved": [f"{name} {value}" for name, value in rows],
        "state_store": f"{store_kind(setup.state_url)} ({redact(setup.state_url)})",
        "calls_per_session": CALLS_PER_SESSION,
    }


# ---------------------------------------------------------------------------------------------
# the state store


def store_kind(url: str) -> str:
    scheme = url.split("://", 1)[0]
    return {"rediss": "redis"}.get(scheme, scheme)


def redact(url: str) -> str:
    """The URL without a password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


def with_bench_prefix(url: str) -> str:
    """A Redis URL with a random ``prefix`` unless it names one: the keys this run writes, and only
    they, are deleted at the end."""
    if store_kind(url) != "redis" or any(k == "prefix" for k, _ in parse_qsl(urlsplit(url).query)):
        return url
    return f"{url}{'&' if urlsplit(url).query else '?'}prefix=bench-{secrets.token_hex(4)}:"


def redis_client(url: str) -> Any:
    """A plain redis-py client on the store's server and database (Interlock's options dropped)."""
    import redis.asyncio as aioredis

    parts = urlsplit(url)
    rest = urlunsplit(parts._replace(query=""))
    return aioredis.Redis.from_url(rest, socket_timeout=1, socket_connect_timeout=1)


async def store_unreachable(url: str) -> str | None:
    """Why the store cannot be used, or None. Only Redis is checked (a PING)."""
    if store_kind(url) != "redis":
        return None
    client = redis_client(url)
    try:
        with anyio.fail_after(3):
            await client.ping()
    except Exception as exc:
        return f"no Redis answers at {redact(url).split('?')[0]}: {type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return None


async def delete_bench_keys(url: str) -> int:
    """Delete every key under the run's prefix; how many there were."""
    prefix = dict(parse_qsl(urlsplit(url).query)).get("prefix")
    if store_kind(url) != "redis" or not prefix:
        return 0
    client = redis_client(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        await client.aclose()


class CountingStore:
    """A ``StateStore`` that counts the operations (and failures) it forwards. Used only in an
    untimed pass, so the timed pipelines never pay for the counting."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.ops: dict[str, int] = {}
        self.failures: list[str] = []

    def _count(self, name: str) -> None:
        self.ops[name] = self.ops.get(name, 0) + 1

    async def _forward(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._count(name)
        try:
            return await getattr(self.inner, name)(*args, **kwargs)
        except Exception as exc:
            self.failures.append(f"{name}: {type(exc).__name__}: {exc}"[:200])
            raise

    async def gcra(self, *args: Any, **kwargs: Any) -> Any:
        return await self._forward("gcra", *args, **kwargs)

    async def update(self, *args: Any, **kwargs: Any) -> Any:
        return await self._forward("update", *args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await self._forward("get", *args, **kwargs)

    async def acquire(self, *args: Any, **kwargs: Any) -> Any:
        return await self._forward("acquire", *args, **kwargs)

    async def release(self, *args: Any, **kwargs: Any) -> Any:
        return await self._forward("release", *args, **kwargs)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def store_operations(setup: Setup, calls: int = 200) -> dict[str, Any]:
    """Store operations per call of the full pipeline (and Redis round trips), counted in an
    untimed pass on a pipeline of its own; any store failure shows here (guards fail open)."""
    counters: list[CountingStore] = []

    def wrap(store: StateStore) -> StateStore:
        counters.append(CountingStore(store))
        return cast(StateStore, counters[-1])

    setup.wrap_store = wrap
    try:
        pipeline = setup.pipeline(setup.guards())
    finally:
        setup.wrap_store = None
    await timed(pipeline, setup.make_call, calls, [])
    ops: dict[str, int] = {}
    for counter in counters:
        for name, n in counter.ops.items():
            ops[name] = ops.get(name, 0) + n
    per_call = {name: round(n / calls, 3) for name, n in sorted(ops.items())}
    kind = store_kind(setup.state_url)
    trips = ROUND_TRIPS.get(kind)
    return {
        "calls": calls,
        "operations_per_call": per_call,
        "round_trips_per_call": (
            round(sum(n * trips.get(name, 1) for name, n in ops.items()) / calls, 3)
            if trips
            else ("0 (in process)" if kind == "memory" else f"{sum(ops.values()) / calls:g} transactions")
        ),
        "failures": sum(len(c.failures) for c in counters),
        "first_failures": [f for c in counters for f in c.failures][:5],
    }


class ProblemLog(logging.Handler):
    """Counts the gateway's warnings and errors during the run (a store that fails makes the
    guards fail open, silently but for a log line)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(f"{record.name}: {record.getMessage()}"[:300])


# ---------------------------------------------------------------------------------------------
# timing

Pipeline = Callable[[ToolCall], Awaitable[ToolResult]]


async def timed(pipeline: Pipeline, make_call: Callable[[], ToolCall], n: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        call = make_call()
        started = clock()
        await pipeline(call)
        out.append(clock() - started)
        # Untimed: one turn of the event loop between calls, as a server has between requests
        # (it also drops the Timeout guard's cancelled timers, as a running server's loop does).
        await anyio.lowlevel.checkpoint()


def split(total: int, parts: int) -> list[int]:
    """``total`` calls over ``parts`` batches, as evenly as possible."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


async def interleaved(
    pipelines: Sequence[Pipeline],
    make_call: Callable[[], ToolCall],
    calls: int,
    batches: int,
    warmup: int,
) -> list[list[int]]:
    """Per pipeline, ``calls`` samples (ns): warm-up first, then batches in rotating order."""
    for pipeline in pipelines:
        await timed(pipeline, make_call, warmup, [])
    samples: list[list[int]] = [[] for _ in pipelines]
    count = len(pipelines)
    for index, size in enumerate(split(calls, batches)):
        gc.collect()  # every batch starts from the same heap state; collections inside stay counted
        # Rotating order: A B, B A, A B, ... for two; A B C, B C A, C A B, ... for more.
        for which in [(i + index) % count for i in range(count)]:
            await timed(pipelines[which], make_call, size, samples[which])
    return samples


def summary(samples_ns: Sequence[int]) -> dict[str, Any]:
    values = sorted(samples_ns)
    us = 1000.0
    total = sum(values)
    return {
        "n": len(values),
        "p50_us": round(percentile(values, 50) / us, 2),
        "p90_us": round(percentile(values, 90) / us, 2),
        "p99_us": round(percentile(values, 99) / us, 2),
        "mean_us": round(total / len(values) / us, 2),
        "max_us": round(values[-1] / us, 1),
        "calls_per_s": round(len(values) / (total / 1e9)),
    }


async def one_compilation_us(setup: Setup, repeat: int = 15) -> float:
    """What compiling the input validator (schema + operator constraints) costs, once: the
    price every call would pay without the cache."""
    call = setup.make_call()
    policy = setup.policies.resolve_call(call)
    call = call.with_changes(policy=policy)
    assert call.input_schema is not None
    times = []
    for _ in range(repeat):
        cache = SchemaCache()
        started = time.perf_counter_ns()
        cache.get("input", call, call.input_schema, policy.of(VALIDATION).constraints)
        times.append(time.perf_counter_ns() - started)
    return round(statistics.median(times) / 1000, 1)


# ---------------------------------------------------------------------------------------------
# the run


def added(bare: Mapping[str, Any], guarded: Mapping[str, Any]) -> dict[str, float]:
    """Guarded minus bare, percentile by percentile (not a percentile of differences)."""
    return {key: round(guarded[key] - bare[key], 2) for key in ("p50_us", "p90_us", "p99_us", "mean_us")}


async def measure(args: argparse.Namespace, state_base: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="interlock-bench-guards-") as tmp:
        setup = await build_setup(Path(tmp), args.state, state_base)
    problems = ProblemLog()
    logging.getLogger("gateway").addHandler(problems)
    try:
        return await _measure(args, setup, problems)
    finally:
        logging.getLogger("gateway").removeHandler(problems)
        for store in setup.stores:
            with contextlib.suppress(Exception):
                await store.close()
        with contextlib.suppress(Exception):
            deleted = await delete_bench_keys(args.state)
            if deleted:
                log(f"deleted the run's {deleted} Redis keys")


async def _measure(args: argparse.Namespace, setup: Setup, problems: ProblemLog) -> dict[str, Any]:
    full_guards = setup.guards()
    issue3_guards = issue_3(setup.guards())
    pipelines = {
        "bare": setup.pipeline([]),
        "issue3": setup.pipeline(issue3_guards),
        "full": setup.pipeline(full_guards),
    }
    setup.full = pipelines["full"]
    caches = {"issue3": schema_cache(issue3_guards), "full": schema_cache(full_guards)}

    # What each pipeline answers, checked once: the guarded ones must have done real work.
    checks: dict[str, Any] = {}
    for name, pipeline in pipelines.items():
        result = await pipeline(setup.make_call())
        checks[f"{name}_result"] = {
            "blocks": len(result.content),
            "notes": list(result.notes),
            "is_error": result.is_error,
        }

    log(
        f"bare, issue-3 guards, all guards: {args.warmup} warm-up + {args.calls} timed calls each, "
        f"{args.batches} batches"
    )
    before = {name: (cache.compilations, cache.hits) for name, cache in caches.items() if cache}
    samples = await interleaved(
        list(pipelines.values()), setup.make_call, args.calls, args.batches, args.warmup
    )
    stats = {name: summary(values) for name, values in zip(pipelines, samples, strict=True)}
    timed_calls = args.calls + args.warmup
    schema: dict[str, Any] = {}
    for name, cache in caches.items():
        assert cache is not None
        compilations, hits = before[name]
        in_lookups = setup.lookup_compilations.get(id(cache), 0)
        schema[name] = {
            "compilations": cache.compilations,
            "compilations_for_the_tool": cache.compilations - in_lookups,
            "compilations_for_the_lookup_tool": in_lookups,
            "compilations_during_the_timed_run": cache.compilations - compilations,
            "hits": cache.hits,
            "hits_per_call_in_the_timed_run": round((cache.hits - hits) / timed_calls, 3),
        }
    schema["one_compilation_us"] = await one_compilation_us(setup)

    issue3_added, full_added = added(stats["bare"], stats["issue3"]), added(stats["bare"], stats["full"])
    document: dict[str, Any] = {
        "state": {"url": redact(args.state), "kind": store_kind(args.state)},
        **stats,
        "added_issue3": issue3_added,
        "added_full": full_added,
        # What issue 4's guards (loop detection, rate limits, breaker, concurrency) add on top of
        # issue 3's pipeline, with this store.
        "added_issue4_over_issue3": added(stats["issue3"], stats["full"]),
        "target": {
            "bar": "issue 3: with its guards on, added p50 within 0.2 ms of the bare pipeline",
            "max_added_p50_us": TARGET_MAX_ADDED_P50_US,
            "issue3_met": issue3_added["p50_us"] <= TARGET_MAX_ADDED_P50_US,
            "full_within": full_added["p50_us"] <= TARGET_MAX_ADDED_P50_US,
        },
        "guards": {
            "issue3": [name for name, _ in issue3_guards],
            "full": [name for name, _ in full_guards],
        },
        "schema_cache": schema,
    }

    if args.attribution_calls:
        names = [name for name, _ in full_guards]
        log(
            f"per-guard attribution: {len(names) + 1} chains, {min(args.warmup, 1000)} warm-up + "
            f"{args.attribution_calls} timed calls each"
        )
        chains = [setup.pipeline(setup.guards()[:k]) for k in range(len(names) + 1)]
        samples = await interleaved(
            chains, setup.make_call, args.attribution_calls, args.batches, min(args.warmup, 1000)
        )
        prefix = [summary(s) for s in samples]
        document["per_guard"] = [
            {
                "guard": name,
                "issue_3": name in ISSUE_3_GUARDS,
                "cumulative_p50_us": prefix[k]["p50_us"],
                "increment_p50_us": round(prefix[k]["p50_us"] - prefix[k - 1]["p50_us"], 2),
            }
            for k, name in enumerate(names, start=1)
        ]
        document["per_guard_chain_without_guards_p50_us"] = prefix[0]["p50_us"]
        document["issue4_increments_p50_us"] = {
            row["guard"]: row["increment_p50_us"]
            for row in document["per_guard"]
            if row["guard"] in STATE_GUARDS
        }
    log("store operations per call (untimed pass)")
    document["store"] = await store_operations(setup)
    document["gateway_warnings"] = {"count": problems.count, "first": problems.first}
    if problems.count or document["store"]["failures"]:
        log(
            f"WARNING: the store failed or the gateway warned ({problems.count} warnings, "
            f"{document['store']['failures']} store failures): the guards may have failed open; "
            "these numbers do not measure the store"
        )
    document["checks"] = checks | {"lookups_run": setup.lookup_calls}
    document["policy"] = policy_summary(setup)
    return document


async def profile(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="interlock-bench-guards-") as tmp:
        setup = await build_setup(Path(tmp), args.state, Path(tmp))
        full = setup.full = setup.pipeline(setup.guards())
        try:
            await _profile(args, setup, full)
        finally:
            for store in setup.stores:
                await store.close()
            await delete_bench_keys(args.state)


async def _profile(args: argparse.Namespace, setup: Setup, full: CallNext) -> None:
    await timed(full, setup.make_call, args.warmup, [])
    profiler = cProfile.Profile()
    profiler.enable()
    await timed(full, setup.make_call, args.calls, [])
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    print(out.getvalue(), file=sys.stderr)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20000, help="timed calls per pipeline (20000)")
    parser.add_argument(
        "--batches", type=int, default=20, help="batches the calls are split into, interleaved (20)"
    )
    parser.add_argument("--warmup", type=int, default=2000, help="untimed calls per pipeline first (2000)")
    parser.add_argument(
        "--attribution-calls",
        type=int,
        default=5000,
        help="timed calls per chain for the per-guard attribution; 0 skips it (5000)",
    )
    parser.add_argument(
        "--state",
        default="memory://",
        help="the state store of the full pipeline's guards, as [gateway] state: memory:// (default), "
        "sqlite:///bench.db (relative: in a temporary folder), redis://127.0.0.1:6379/15 (a random "
        "?prefix=bench-...: is added, and its keys deleted at the end)",
    )
    parser.add_argument(
        "--skip-unreachable",
        action="store_true",
        help="if the --state Redis does not answer, print a note and a JSON document saying so, exit 0",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run --calls through the full pipeline under cProfile and print the top functions to stderr",
    )
    args = parser.parse_args(argv)
    if args.calls < 1 or args.batches < 1 or args.warmup < 0 or args.attribution_calls < 0:
        parser.error("--calls and --batches must be >= 1, --warmup and --attribution-calls >= 0")
    args.state = with_bench_prefix(args.state)
    if args.batches > args.calls or (args.attribution_calls and args.batches > args.attribution_calls):
        parser.error("--batches cannot exceed --calls or --attribution-calls")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unreachable = anyio.run(store_unreachable, args.state, backend="asyncio")
    if unreachable:
        log(f"{'skipped' if args.skip_unreachable else 'failed'}: {unreachable}")
        if not args.skip_unreachable:
            return 1
        skipped = {
            "benchmark": "guards_overhead",
            "state": {"url": redact(args.state)},
            "skipped": unreachable,
        }
        print(json.dumps(skipped, indent=2))
        return 0
    if args.profile:
        anyio.run(profile, args, backend="asyncio")
        return 0
    started = time.monotonic()
    load_before = load_average()
    code = git_state()
    log(f"state store: {redact(args.state)}")
    try:
        with tempfile.TemporaryDirectory(prefix="interlock-bench-state-") as state_base:
            results = anyio.run(measure, args, Path(state_base), backend="asyncio")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    machine = machine_info()
    for package in ("jsonschema", "common-expression-language", "prometheus_client", "anyio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            machine[f"{package.replace('-', '_')}_version"] = metadata.version(package)
    document = {
        "benchmark": "guards_overhead",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code": code,
        "machine": machine | {"load_average_1_5_15_min": {"before": load_before, "after": load_average()}},
        "settings": {
            "calls": args.calls,
            "batches": args.batches,
            "warmup": args.warmup,
            "attribution_calls": args.attribution_calls,
            "state": redact(args.state),
            "event_loop": "asyncio (anyio.run)",
            "terminal": "in-process async function returning a fixed result; never suspends",
            "between_calls": "one untimed event-loop turn (anyio.lowlevel.checkpoint)",
            "tool": f"{SERVER}{SEP}{TOOL['name']}",
            "arguments": ARGS,
        },
        **results,
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
