"""Breaker, rate limits, concurrency and loop detection in policy files: loading, errors, combination."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from gateway.approvals.requirement import APPROVAL
from gateway.config import explain_text
from gateway.core.policy import DEFAULT_POLICY
from gateway.guards.breaker import BREAKER
from gateway.guards.breaker_state import BreakerSettings
from gateway.guards.concurrency import CONCURRENCY, ConcurrencyLimit
from gateway.guards.loops import LOOPS, LoopSettings
from gateway.guards.ratelimit import RATE_LIMITS, RateLimit
from gateway.pipeline import load_policies
from gateway.pipeline.schema import policy_schema

from .test_policy_loader import DEFAULT_TOML, ctx, errors, folder, load, shipped

# The keys of the requirement, every one set (inline tables spanning lines are TOML 1.1, so the
# long ones are sub-tables here).
EVERY_KEY = """
[defaults]
rate_limits = [
  { name = "per-client", limit = 5, period_s = 1, burst = 5, key = ["client"] },
  { name = "hourly", limit = 1000, period_s = 3600, key = ["client", "tool"] },
]
rate_limit_on_store_error = "closed"
concurrency = { max_in_flight = 16, max_queue_wait_s = 5 }

[defaults.breaker]
enabled = true
per_tool = true
window_size = 30
minimum_calls = 12
failure_rate = 0.4
slow_call_rate = 0.9
slow_call_s = 8
half_open_calls = 2
break_s = 15
max_break_s = 120
break_multiplier = 1.5
on_store_error = "closed"
fallback = "tool"
fallback_tool = "crm__search_customers"

[defaults.loops]
enabled = true
action = "warn"
window_s = 300
max_identical_calls = 8
max_identical_results = 4
max_failing_retries = 2
max_cycle_repeats = 5
max_calls_per_session = 400
max_calls_per_tool_per_session = 100
polling_min_interval_s = 30
on_store_error = "closed"
"""


def test_every_key_loads_into_the_core_dataclasses(tmp_path: Path) -> None:
    policy = load(tmp_path, a=EVERY_KEY).resolve(ctx())
    assert policy.of(BREAKER) == BreakerSettings(
        enabled=True,
        per_tool=True,
        window_size=30,
        minimum_calls=12,
        failure_rate=0.4,
        slow_call_rate=0.9,
        slow_call_s=8,
        half_open_calls=2,
        break_s=15,
        max_break_s=120,
        break_multiplier=1.5,
        on_store_error="closed",
        fallback="tool",
        fallback_tool="crm__search_customers",
    )
    assert policy.of(RATE_LIMITS).limits == (
        RateLimit(name="per-client", limit=5, period_s=1, burst=5, key=("client",)),
        RateLimit(name="hourly", limit=1000, period_s=3600, burst=1, key=("client", "tool")),
    )
    assert policy.of(RATE_LIMITS).on_store_error == "closed"
    assert policy.of(CONCURRENCY) == ConcurrencyLimit(max_in_flight=16, max_queue_wait_s=5)
    assert policy.of(LOOPS) == LoopSettings(
        enabled=True,
        action="warn",
        window_s=300,
        max_identical_calls=8,
        max_identical_results=4,
        max_failing_retries=2,
        max_cycle_repeats=5,
        max_calls_per_session=400,
        max_calls_per_tool_per_session=100,
        polling_min_interval_s=30,
        on_store_error="closed",
    )


def test_the_same_keys_in_a_rule_as_inline_tables(tmp_path: Path) -> None:
    text = (
        "[[rules]]\nname = 'r'\n"
        "breaker = { enabled = false, fallback = 'cached' }\n"
        "rate_limits = [{ name = 'x', limit = 2, period_s = 60 }]\n"
        "rate_limit_on_store_error = 'closed'\n"
        "concurrency = { max_in_flight = 3 }\n"
        "loops = { action = 'warn', polling_min_interval_s = 5 }\n"
    )
    policy = load(tmp_path, a=text).resolve(ctx())
    assert policy.of(BREAKER) == BreakerSettings(enabled=False, fallback="cached")
    assert policy.of(RATE_LIMITS).limits == (
        RateLimit(name="x", limit=2, period_s=60),
    )  # burst 1, per client
    assert policy.of(RATE_LIMITS).on_store_error == "closed"
    assert policy.of(CONCURRENCY) == ConcurrencyLimit(max_in_flight=3)  # max_queue_wait_s 5
    assert policy.of(LOOPS) == LoopSettings(action="warn", polling_min_interval_s=5)


def test_unset_keys_keep_the_core_defaults(tmp_path: Path) -> None:
    policy = load(tmp_path, a="[defaults]\ntimeout_s = 3\n").resolve(ctx())
    assert policy.of(BREAKER) == DEFAULT_POLICY.of(BREAKER) == BreakerSettings()
    assert policy.of(LOOPS) == LoopSettings()
    assert policy.of(RATE_LIMITS).limits == ()
    assert policy.of(RATE_LIMITS).on_store_error == "open"
    assert policy.of(CONCURRENCY) is None


def test_default_toml_turns_the_new_guards_on(tmp_path: Path) -> None:
    path = folder(tmp_path)
    shutil.copy(DEFAULT_TOML, path / "default.toml")
    policy = load_policies(path).resolve(ctx())
    assert (
        policy.of(BREAKER).enabled
        and not policy.of(BREAKER).per_tool
        and policy.of(BREAKER).fallback == "none"
    )
    assert policy.of(BREAKER) == BreakerSettings()  # written out, equal to the built-in values
    assert policy.of(LOOPS).enabled and policy.of(LOOPS).action == "block"
    assert policy.of(LOOPS) == LoopSettings()
    [limit] = policy.of(RATE_LIMITS).limits
    assert limit.name == "per-client" and limit.key == ("client",)
    assert limit.limit / limit.period_s >= 20 and limit.burst >= limit.limit  # generous
    assert policy.of(RATE_LIMITS).on_store_error == "open"
    assert policy.of(CONCURRENCY) is None


def test_the_example_declares_the_new_guards(tmp_path: Path) -> None:
    policies = shipped(tmp_path)
    status = policies.resolve(ctx("jobs", "get_status"))
    assert status.of(LOOPS).polling_min_interval_s == 5
    assert status.of(LOOPS).max_identical_results == 3
    assert status.of(LOOPS).action == "block"  # from default.toml
    assert policies.resolve(ctx("jobs", "start_job")).of(LOOPS).polling_min_interval_s is None

    quote = policies.resolve(ctx("flaky", "get_quote"))
    assert quote.of(BREAKER).fallback == "cached"
    assert quote.of(BREAKER).window_size == 10  # the server-wide rule, merged key by key
    order = policies.resolve(ctx("flaky", "place_order"))
    assert order.of(BREAKER).fallback == "none" and order.of(BREAKER).window_size == 10
    assert (
        quote.of(CONCURRENCY)
        == order.of(CONCURRENCY)
        == ConcurrencyLimit(max_in_flight=4, max_queue_wait_s=2)
    )
    assert policies.resolve(ctx("crm", "get_customer")).of(CONCURRENCY) is None

    refund = policies.resolve(ctx("crm", "refund", client="support-bot", args={"amount": 20}))
    assert [limit.name for limit in refund.of(RATE_LIMITS).limits] == ["per-client", "refunds-per-client"]
    assert refund.of(RATE_LIMITS).limits[1] == RateLimit(
        name="refunds-per-client", limit=2, period_s=60, burst=2, key=("client",)
    )


# --- load errors ----------------------------------------------------------------------------------

RULES = "".join(f'[[rules]]\nname = "r{i}"\n' for i in range(3))
"""Three rules, so that the body under test is ``rules[2]``."""


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (
            'loops = { action = "ask" }',
            "rules[2].loops.action: expected 'warn', 'block' or 'approve', got 'ask'",
        ),
        ('approval = { mode = "ask" }', "rules[2].approval.mode: expected 'elicit', 'hold' or 'defer'"),
        ("approval = { timeout_s = 0 }", "rules[2].approval.timeout_s: expected a number > 0"),
        ('approval = { when = "args.amount >" }', "rules[2].approval.when"),
        ("approval = { approvers = ['o p'] }", "rules[2].approval.approvers[0]"),
        ("loops = { max_identical_calls = 0 }", "rules[2].loops.max_identical_calls: expected a number > 0"),
        (
            "loops = { max_calls_per_session = -1 }",
            "rules[2].loops.max_calls_per_session: expected a number > 0",
        ),
        ("loops = { window_s = 0 }", "rules[2].loops.window_s: expected a number > 0, got 0"),
        (
            "loops = { polling_min_interval_s = 0 }",
            "rules[2].loops.polling_min_interval_s: expected a number > 0",
        ),
        ('loops = { on_store_error = "shut" }', "rules[2].loops.on_store_error: expected 'open' or 'closed'"),
        (
            "loops = { max_identical = 3 }",
            "rules[2].loops.max_identical: unknown key (allowed: enabled, action,",
        ),
        ("breaker = { failure_rate = 0 }", "rules[2].breaker.failure_rate: expected a number > 0, got 0"),
        (
            "breaker = { failure_rate = 1.5 }",
            "rules[2].breaker.failure_rate: expected a number <= 1, got 1.5",
        ),
        (
            "breaker = { slow_call_rate = true }",
            "rules[2].breaker.slow_call_rate: expected a number, got true",
        ),
        ("breaker = { window_size = 0 }", "rules[2].breaker.window_size: expected a number > 0, got 0"),
        (
            "breaker = { half_open_calls = 0 }",
            "rules[2].breaker.half_open_calls: expected a number > 0, got 0",
        ),
        ("breaker = { break_s = 0 }", "rules[2].breaker.break_s: expected a number > 0, got 0"),
        ("breaker = { break_multiplier = 0.5 }", "rules[2].breaker.break_multiplier: expected a number >= 1"),
        (
            "breaker = { window_size = 5, minimum_calls = 10 }",
            "rules[2].breaker.minimum_calls: must be <= window_size (5)",
        ),
        (
            "breaker = { break_s = 50, max_break_s = 10 }",
            "rules[2].breaker.max_break_s: must be >= break_s (50)",
        ),
        (
            'breaker = { fallback = "tool" }',
            'rules[2].breaker.fallback_tool: required with fallback = "tool" (the tool to call instead)',
        ),
        (
            'breaker = { fallback = "cached", fallback_tool = "crm__x" }',
            "rules[2].breaker.fallback_tool: is used only with fallback = \"tool\", not 'cached'",
        ),
        (
            'breaker = { fallback = "tool", fallback_tool = "crm x" }',
            "rules[2].breaker.fallback_tool: expected 1 to 128 letters, digits,",
        ),
        (
            'breaker = { fallback = "retry" }',
            "rules[2].breaker.fallback: expected 'none', 'cached' or 'tool'",
        ),
        ("breaker = { windowsize = 5 }", "did you mean 'window_size'?"),
        (
            "rate_limits = [{ name = 'a', limit = 0, period_s = 1 }]",
            "rules[2].rate_limits[0].limit: expected a number > 0",
        ),
        (
            "rate_limits = [{ name = 'a', limit = 1, period_s = 0 }]",
            "rules[2].rate_limits[0].period_s: expected a number > 0",
        ),
        (
            "rate_limits = [{ name = 'a', limit = 1, period_s = 1, burst = 0 }]",
            "rules[2].rate_limits[0].burst: expected a number > 0, got 0",
        ),
        (
            "rate_limits = [{ name = 'a', limit = 1, period_s = 1, key = [] }]",
            "rules[2].rate_limits[0].key: expected at least one item, got an empty list",
        ),
        (
            "rate_limits = [{ name = 'a', limit = 1, period_s = 1, key = ['user'] }]",
            "rules[2].rate_limits[0].key[0]: expected 'client', 'session', 'server' or 'tool', got 'user'",
        ),
        (
            "rate_limits = [{ name = 'a', limit = 1, period_s = 1, key = ['tool', 'client', 'tool'] }]",
            "rules[2].rate_limits[0].key[2]: 'tool' is already listed (key[0])",
        ),
        (
            "rate_limits = [{ name = 'a', limit = 1, period_s = 1 }, "
            "{ name = 'a', limit = 2, period_s = 1 }]",
            "rules[2].rate_limits[1].name: duplicate rate limit name 'a' (first in rate_limits[0])",
        ),
        (
            "rate_limits = [{ limit = 1, period_s = 1 }]",
            "rules[2].rate_limits[0].name: required key is missing",
        ),
        (
            "rate_limits = [{ name = 'a b', limit = 1, period_s = 1 }]",
            "rules[2].rate_limits[0].name: expected only letters, digits, '_', '.' and '-', got 'a b'",
        ),
        ("rate_limits = { name = 'a' }", "rules[2].rate_limits: expected a list, got a table"),
        (
            "rate_limit_on_store_error = 'fail'",
            "rules[2].rate_limit_on_store_error: expected 'open' or 'closed'",
        ),
        ("concurrency = {}", "rules[2].concurrency.max_in_flight: required key is missing"),
        (
            "concurrency = { max_in_flight = 0 }",
            "rules[2].concurrency.max_in_flight: expected a number > 0, got 0",
        ),
        (
            "concurrency = { max_in_flight = 1, max_queue_wait_s = -1 }",
            "rules[2].concurrency.max_queue_wait_s: expected a number >= 0, got -1",
        ),
    ],
)
def test_load_error(tmp_path: Path, body: str, line: str) -> None:
    found = errors(tmp_path, crm=RULES + body + "\n")
    assert any(got.startswith(f"policies/crm.toml: {line}") or line in got for got in found), found
    assert all(": rules[2]." in got for got in found), found


def test_approve_is_a_loop_action(tmp_path: Path) -> None:
    text = RULES + '[rules.loops]\naction = "approve"\n'
    assert load(tmp_path, crm=text).resolve(ctx()).of(LOOPS).action == "approve"


def test_a_later_rule_replaces_or_lifts_an_approval(tmp_path: Path) -> None:
    text = (
        "[[rules]]\nname = 'big'\napproval = { when = 'args.amount > 100', timeout_s = 60, "
        "approvers = ['ops'], mode = 'hold', redact = ['iban'] }\n"
    )
    approval = load(tmp_path, a=text).resolve(ctx()).of(APPROVAL)
    assert approval is not None
    assert (approval.rule, approval.timeout_s, approval.approvers, approval.mode) == (
        "big",
        60,
        ("ops",),
        "hold",
    )
    assert approval.redact == ("iban",) and approval.when_source == "args.amount > 100"
    assert approval.when is not None and approval.when({"args": {"amount": 150}}) is True
    assert approval.when({"args": {"amount": 50}}) is False
    lifted = text + "[[rules]]\nname = 'trusted'\napproval = { required = false }\n"
    assert load(_sub(tmp_path, "lifted"), a=lifted).resolve(ctx()).of(APPROVAL) is None
    replaced = text + "[[rules]]\nname = 'all'\napproval = {}\n"
    again = load(_sub(tmp_path, "replaced"), a=replaced).resolve(ctx()).of(APPROVAL)
    assert again is not None and again.rule == "all" and again.when is None and again.approvers == ()


def test_waiting_zero_seconds_for_a_slot_is_allowed(tmp_path: Path) -> None:
    text = "[[rules]]\nname = 'r'\nconcurrency = { max_in_flight = 1, max_queue_wait_s = 0 }\n"
    assert load(tmp_path, a=text).resolve(ctx()).of(CONCURRENCY) == ConcurrencyLimit(1, 0)


def test_a_rate_limit_name_may_repeat_across_rules(tmp_path: Path) -> None:
    one = "rate_limits = [{ name = 'a', limit = 1, period_s = 1 }]\n"
    policies = load(tmp_path, a=f"[defaults]\n{one}[[rules]]\nname = 'r'\n{one}")
    assert [limit.name for limit in policies.resolve(ctx()).of(RATE_LIMITS).limits] == ["a"]


# --- combination ----------------------------------------------------------------------------------


def test_breaker_and_loops_merge_key_by_key(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        a="[defaults]\nbreaker = { window_size = 30, failure_rate = 0.4, break_s = 20 }\n"
        "loops = { action = 'warn', max_identical_calls = 7 }\n"
        "[[rules]]\nname = 'server'\nmatch = { servers = ['flaky'] }\n"
        "breaker = { failure_rate = 0.25, per_tool = true }\nloops = { window_s = 60 }\n"
        "[[rules]]\nname = 'quote'\nmatch = { tools = ['get_quote'] }\n"
        "breaker = { fallback = 'cached' }\nloops = { action = 'block', polling_min_interval_s = 2 }\n",
    )
    quote = policies.resolve(ctx("flaky", "get_quote"))
    assert quote.rules == ("server", "quote")
    assert quote.of(BREAKER) == BreakerSettings(
        window_size=30, failure_rate=0.25, break_s=20, per_tool=True, fallback="cached"
    )
    assert quote.of(LOOPS) == LoopSettings(
        action="block", max_identical_calls=7, window_s=60, polling_min_interval_s=2
    )
    other = policies.resolve(ctx("crm", "get_quote"))
    assert other.of(BREAKER) == BreakerSettings(
        window_size=30, failure_rate=0.4, break_s=20, fallback="cached"
    )
    assert other.of(LOOPS).window_s == 600 and other.of(LOOPS).action == "block"


def test_rate_limits_merge_by_name_later_wins(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        a="[defaults]\nrate_limits = [\n"
        "  { name = 'per-client', limit = 20, period_s = 1, burst = 40 },\n"
        "  { name = 'hourly', limit = 1000, period_s = 3600, key = ['client', 'tool'] },\n]\n"
        "[[rules]]\nname = 'batch'\nmatch = { clients = ['batch'] }\n"
        "rate_limits = [{ name = 'per-client', limit = 200, period_s = 1 }]\n"
        "[[rules]]\nname = 'refunds'\nmatch = { tools = ['refund'] }\n"
        "rate_limits = [{ name = 'refunds', limit = 2, period_s = 60, key = ['tool'] }]\n",
    )
    plain = policies.resolve(ctx("crm", "get_customer"))
    assert [(limit.name, limit.limit) for limit in plain.of(RATE_LIMITS).limits] == [
        ("per-client", 20),
        ("hourly", 1000),
    ]
    batch = policies.resolve(ctx("crm", "refund", client="batch"))
    assert batch.of(RATE_LIMITS).limits == (
        RateLimit(name="per-client", limit=200, period_s=1),  # replaced whole, in its place: burst 1 again
        RateLimit(name="hourly", limit=1000, period_s=3600, key=("client", "tool")),
        RateLimit(name="refunds", limit=2, period_s=60, key=("tool",)),
    )


def test_concurrency_is_replaced_whole(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        a="[defaults]\nconcurrency = { max_in_flight = 16, max_queue_wait_s = 1 }\n"
        "[[rules]]\nname = 'flaky'\nmatch = { servers = ['flaky'] }\nconcurrency = { max_in_flight = 2 }\n",
    )
    assert policies.resolve(ctx("crm", "x")).of(CONCURRENCY) == ConcurrencyLimit(16, 1)
    # Not merged per key: max_queue_wait_s is the built-in 5 again, not the 1 of [defaults].
    assert policies.resolve(ctx("flaky", "x")).of(CONCURRENCY) == ConcurrencyLimit(2, 5)


def test_rate_limit_on_store_error_is_a_scalar(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        a="[defaults]\nrate_limit_on_store_error = 'closed'\n"
        "[[rules]]\nname = 'r'\nmatch = { tools = ['read'] }\nrate_limit_on_store_error = 'open'\n",
    )
    assert policies.resolve(ctx()).of(RATE_LIMITS).on_store_error == "closed"
    assert policies.resolve(ctx(tool="read")).of(RATE_LIMITS).on_store_error == "open"


def test_crossed_breaker_values_across_tables_are_clamped(tmp_path: Path) -> None:
    # Each table is valid on its own; merged, the minimum would exceed what the window can hold.
    policies = load(
        tmp_path,
        a="[defaults]\nbreaker = { minimum_calls = 10, break_s = 30 }\n"
        "[[rules]]\nname = 'r'\nbreaker = { window_size = 4, max_break_s = 20 }\n",
    )
    breaker = policies.resolve(ctx()).of(BREAKER)
    assert (breaker.window_size, breaker.minimum_calls) == (4, 4)
    assert (breaker.break_s, breaker.max_break_s) == (20, 20)


# --- explain --------------------------------------------------------------------------------------


def _rows(text: str) -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in text.split("resolved policy", 1)[1].splitlines()[1:]:
        name, _, value = line.strip().partition(" ")
        rows[name] = value.strip()
    return rows


def test_explain_text_shows_the_new_guards(tmp_path: Path) -> None:
    policies = shipped(tmp_path)
    quote = _rows(explain_text(policies, ctx("flaky", "get_quote")))
    assert quote["breaker"].startswith(
        "on, per server 'flaky': window_size=10 minimum_calls=5 failure_rate=0.5"
    )
    assert quote["breaker"].endswith("on_store_error=open fallback=cached")
    assert quote["rate_limits.per-client"] == "limit=50 period_s=1 burst=100 key=client"
    assert quote["rate_limit_on_store_error"] == "open"
    assert quote["concurrency"] == "max_in_flight=4 max_queue_wait_s=2 (for all of server 'flaky')"
    assert quote["loops"].startswith("action=block window_s=600 max_identical_calls=10")
    assert "polling_min_interval_s" not in quote["loops"]

    status = _rows(explain_text(policies, ctx("jobs", "get_status")))
    assert "max_identical_results=3" in status["loops"]
    assert "polling_min_interval_s=5" in status["loops"]
    assert status["concurrency"] == "no limit"

    refund = _rows(explain_text(policies, ctx("crm", "refund", client="bot", args={"amount": 1})))
    assert refund["rate_limits.refunds-per-client"] == "limit=2 period_s=60 burst=2 key=client"


def test_explain_text_shows_guards_off_and_fallback_tools(tmp_path: Path) -> None:
    text = (
        "[defaults]\nloops = { enabled = false }\n"
        "breaker = { per_tool = true, fallback = 'tool', fallback_tool = 'crm__search_customers' }\n"
        "[[rules]]\nname = 'off'\nmatch = { tools = ['x'] }\nbreaker = { enabled = false }\n"
    )
    policies = load(tmp_path, a=text)
    rows = _rows(explain_text(policies, ctx("crm", "get_customer")))
    assert rows["breaker"].startswith("on, per tool ('crm', 'get_customer'): window_size=20")
    assert rows["breaker"].endswith("fallback=tool fallback_tool=crm__search_customers")
    assert rows["rate_limits"] == "none"
    assert rows["loops"] == "off"
    assert _rows(explain_text(policies, ctx("crm", "x")))["breaker"] == "off"


def test_explain_text_on_builtin_defaults_shows_the_guards(tmp_path: Path) -> None:
    rows = _rows(explain_text(load_policies(tmp_path / "none"), ctx()))
    assert rows["breaker"].startswith("on, per server 'crm'")
    assert rows["rate_limits"] == "none" and rows["concurrency"] == "no limit"
    assert rows["loops"].startswith("action=block")


# --- the JSON Schema ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"loops": {"action": "ask"}},
        {"loops": {"max_identical_calls": 0}},
        {"breaker": {"failure_rate": 1.5}},
        {"breaker": {"fallback": "retry"}},
        {"rate_limits": [{"name": "a", "limit": 1, "period_s": 1, "key": ["client", "client"]}]},
        {"rate_limits": [{"name": "a", "limit": 1, "period_s": 1, "key": []}]},
        {"rate_limits": [{"name": "a", "limit": 1, "period_s": 1, "key": ["user"]}]},
        {"rate_limits": [{"limit": 1, "period_s": 1}]},
        {"concurrency": {"max_queue_wait_s": 1}},
        {"rate_limit_on_store_error": "maybe"},
    ],
)
def test_schema_rejects(body: dict[str, Any]) -> None:
    data = {"rules": [{"name": "r", **body}]}
    assert list(Draft202012Validator(policy_schema()).iter_errors(data))


def test_schema_accepts_every_key() -> None:
    import tomllib

    Draft202012Validator(policy_schema()).validate(tomllib.loads(EVERY_KEY))


def _sub(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path
