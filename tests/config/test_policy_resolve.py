"""How rules combine into a ResolvedPolicy, how they match, and the resolution cache."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.config import PolicyContext
from gateway.core import Caller, ToolCall
from gateway.guards.access import ACCESS
from gateway.guards.classify import CLASSIFY
from gateway.guards.output import SIZE_CAP
from gateway.guards.pinning import PINNING
from gateway.guards.references import REFERENCES
from gateway.guards.reminders import REMINDERS
from gateway.guards.retry import RETRY
from gateway.guards.rewrite import HINTS
from gateway.guards.timeout import TIMEOUT
from gateway.guards.traits import TRAITS
from gateway.guards.validation import VALIDATION

from .test_policy_loader import ctx, load

# --- combination ----------------------------------------------------------------------------------


def test_later_rules_override_scalars_they_set(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        a="[defaults]\ntimeout_s = 30\npinning = 'warn'\nmax_result_bytes = 1000\n"
        "[[rules]]\nname = 'one'\ntimeout_s = 10\nidempotent = true\n"
        "[[rules]]\nname = 'two'\ntimeout_s = 5\n",
        b="[[rules]]\nname = 'three'\npinning = 'block'\nidempotent = false\n",
    )
    policy = policies.resolve(ctx())
    assert policy.rules == ("one", "two", "three")
    assert policy.of(TIMEOUT).timeout_s == 5  # two overrides one, which overrode [defaults]
    assert policy.of(PINNING).mode == "block"
    assert policy.of(TRAITS).idempotent is False
    assert policy.of(SIZE_CAP).max_result_bytes == 1000  # set only by [defaults]


def test_defaults_apply_first_whatever_file_holds_them(tmp_path: Path) -> None:
    policies = load(tmp_path, a="[[rules]]\nname = 'r'\ntimeout_s = 1\n", z="[defaults]\ntimeout_s = 9\n")
    assert policies.resolve(ctx()).of(TIMEOUT).timeout_s == 1


def test_retry_and_hints_merge_key_by_key(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        a="[defaults]\nretry = { max_attempts = 5, base_delay_s = 1 }\n"
        "hints = { forbidden = 'd-forbidden', unauthorized = 'd-unauthorized' }\n"
        "[[rules]]\nname = 'r'\nretry = { max_attempts = 2 }\nhints = { forbidden = 'r-forbidden' }\n",
    )
    policy = policies.resolve(ctx())
    assert (policy.of(RETRY).max_attempts, policy.of(RETRY).base_delay_s, policy.of(RETRY).max_delay_s) == (
        2,
        1.0,
        5.0,
    )
    assert dict(policy.of(HINTS).hints) == {"forbidden": "r-forbidden", "unauthorized": "d-unauthorized"}


def test_argument_constraints_merge_per_argument_and_constraint(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        a="[defaults]\narguments = { id = { pattern = '^C' }, n = { minimum = 1, maximum = 10 } }\n"
        "[[rules]]\nname = 'r'\narguments = { n = { maximum = 5 }, s = { enum = ['a', 'b'] } }\n",
    )
    constraints = policies.resolve(ctx()).of(VALIDATION).constraints
    assert constraints["id"].pattern == "^C"
    assert (constraints["n"].minimum, constraints["n"].maximum) == (1, 5)
    assert constraints["s"].enum == ("a", "b")


def test_lists_accumulate(tmp_path: Path) -> None:
    ref = "[[rules.references]]\nargument = 'id'\ntool = 'crm__get_customer'\n"
    pattern = "[[rules.error_patterns]]\ncode = 'not_found'\npattern = 'gone'\n"
    policies = load(
        tmp_path,
        a="[defaults]\nreminder = 'Be nice.'\n"
        "[[defaults.error_patterns]]\ncode = 'conflict'\npattern = 'taken'\n"
        f"[[rules]]\nname = 'r1'\nreminder = 'No refunds.'\n{ref}{pattern}"
        "[[rules]]\nname = 'r2'\nreminder = 'Be nice.'\n",
    )
    policy = policies.resolve(ctx())
    assert policy.of(REMINDERS).texts == ("Be nice.", "No refunds.")  # the same text once
    assert [(p.code, p.pattern.pattern) for p in policy.of(CLASSIFY).patterns] == [
        ("conflict", "taken"),
        ("not_found", "gone"),
    ]
    [reference] = policy.of(REFERENCES).checks
    assert reference.source == {"id": 'args["id"]'}  # looked up under its own name by default
    assert reference.arguments["id"]({"args": {"id": "C000123"}}) == "C000123"


@pytest.mark.parametrize(
    ("defaults", "rules", "expected"),
    [
        ("allow", ["deny", "allow"], "deny"),  # deny is sticky
        ("allow", ["allow", "deny"], "deny"),
        ("allow", [None, None], "allow"),
        ("deny", [None], "deny"),  # an allow list: nothing allowed ...
        ("deny", ["allow"], "allow"),  # ... unless a rule allows it
        ("deny", ["allow", "deny", "allow"], "deny"),
    ],
)
def test_deny_wins(tmp_path: Path, defaults: str, rules: list[str | None], expected: str) -> None:
    text = f"[defaults]\naccess = '{defaults}'\n" + "".join(
        f"[[rules]]\nname = 'r{i}'\n" + (f"access = '{access}'\n" if access else "")
        for i, access in enumerate(rules)
    )
    assert load(tmp_path, a=text).resolve(ctx()).of(ACCESS).access == expected


def test_resolved_mappings_are_read_only(tmp_path: Path) -> None:
    policy = load(tmp_path, a="[defaults]\nhints = { forbidden = 'x' }\n").resolve(ctx())
    with pytest.raises(TypeError):
        policy.of(HINTS).hints["forbidden"] = "y"  # type: ignore[index]


# --- matching -------------------------------------------------------------------------------------

MATCHING = """
[[rules]]
name = "upstream-name"
match = { tools = ["refund"] }
[[rules]]
name = "exposed-name"
match = { tools = ["crm__ref*"] }
[[rules]]
name = "server"
match = { servers = ["cr?"] }
[[rules]]
name = "clients"
match = { clients = ["support-*", "admin"] }
[[rules]]
name = "all-three"
match = { servers = ["crm"], tools = ["get_*"], clients = ["admin"] }
[[rules]]
name = "everything"
"""


@pytest.mark.parametrize(
    ("call", "matched"),
    [
        (ctx("crm", "refund", client="bot"), ["upstream-name", "exposed-name", "server", "everything"]),
        (ctx("crm", "refund", exposed="refund", client="bot"), ["upstream-name", "server", "everything"]),
        (ctx("crm", "rf", exposed="crm__refund_v2"), ["exposed-name", "server", "everything"]),
        (ctx("crm2", "get_customer", client="support-7"), ["clients", "everything"]),
        (ctx("crm", "get_customer", client="admin"), ["server", "clients", "all-three", "everything"]),
        (ctx("crm", "get_customer", client="Admin"), ["server", "everything"]),  # globs are case-sensitive
    ],
)
def test_globs(tmp_path: Path, call: PolicyContext, matched: list[str]) -> None:
    assert list(load(tmp_path, a=MATCHING).resolve(call).rules) == matched


# --- conditions -----------------------------------------------------------------------------------

WHEN = """
[[rules]]
name = "large-refunds"
match = { tools = ["refund"] }
when = "args.amount > 100 && client != 'admin'"
access = "deny"
[[rules]]
name = "destructive"
when = "annotations.destructiveHint"
reminder = "Careful."
"""


def test_when_reads_args_and_client(tmp_path: Path) -> None:
    policies = load(tmp_path, a=WHEN)
    refund = {"annotations": {"destructiveHint": False}}
    assert policies.resolve(ctx("crm", "refund", args={"amount": 150}, **refund)).of(ACCESS).access == "deny"
    assert policies.resolve(ctx("crm", "refund", args={"amount": 50}, **refund)).of(ACCESS).access == "allow"
    assert (
        policies.resolve(ctx("crm", "refund", args={"amount": 150}, client="admin", **refund))
        .of(ACCESS)
        .access
        == "allow"
    )


def test_conditions_are_not_cached_across_arguments(tmp_path: Path) -> None:
    policies = load(tmp_path, a=WHEN)
    for _ in range(3):
        for amount, access in ((150, "deny"), (50, "allow"), (100.5, "deny"), (100, "allow")):
            assert policies.resolve(ctx("crm", "refund", args={"amount": amount})).of(ACCESS).access == access


def test_annotations_carry_the_spec_defaults(tmp_path: Path) -> None:
    # An absent destructiveHint means "may be destructive" in MCP; a condition reads it as such.
    policies = load(tmp_path, a=WHEN)
    assert policies.resolve(ctx()).of(REMINDERS).texts == ("Careful.",)
    assert (
        policies.resolve(ctx(annotations={"readOnlyHint": True, "destructiveHint": False}))
        .of(REMINDERS)
        .texts
        == ()
    )


def test_a_failing_condition_does_not_match_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        "[[rules]]\nname = 'needs-amount'\nwhen = 'args.amount > 100'\naccess = 'deny'\n"
        "[[rules]]\nname = 'not-bool'\nwhen = 'args.amount'\naccess = 'deny'\n"
    )
    policies = load(tmp_path, a=text)
    with caplog.at_level(logging.WARNING, logger="interlock.policy"):
        for _ in range(3):
            assert policies.resolve(ctx(args={"amount": "x"})).rules == ()  # string > int; a string
            assert policies.resolve(ctx(args={"other": 1})).of(ACCESS).access == "allow"  # no such key
        assert policies.resolve(ctx(args={"amount": 500})).rules == ("needs-amount",)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "'needs-amount'" in messages[0] and "No such overload" in messages[0]
    assert "'not-bool'" in messages[1] and "gave 'x', not true or false" in messages[1]
    assert load(tmp_path, a=text).explain(ctx(args={}))[0].reasons[-1] == (
        "when `args.amount > 100` failed (no such key: 'amount' (test it first with has(), "
        "e.g. has(args.x) && args.x > 1)), so the rule does not match"
    )


def test_unconvertible_arguments_do_not_crash(tmp_path: Path) -> None:
    policies = load(tmp_path, a="[[rules]]\nname = 'r'\nwhen = 'size(args) > 0'\naccess = 'deny'\n")
    assert policies.resolve(ctx(args={"x": {1, 2}})).of(ACCESS).access == "allow"


def test_conditions_read_only_the_arguments_they_name(tmp_path: Path) -> None:
    policies = load(tmp_path, a=WHEN)
    # `x` cannot be converted to CEL; the condition never reads it, so it is never converted.
    assert (
        policies.resolve(ctx("crm", "refund", args={"amount": 500, "x": object()})).of(ACCESS).access
        == "deny"
    )


# --- the tools/list view, and calls -----------------------------------------------------------------


def test_is_listed(tmp_path: Path) -> None:
    text = (
        "[[rules]]\nname = 'no-batch'\nmatch = { tools = ['refund'], clients = ['batch'] }\naccess = 'deny'\n"
        "[[rules]]\nname = 'no-destructive'\nmatch = { servers = ['ops'] }\n"
        "when = 'annotations.destructiveHint'\naccess = 'deny'\n" + WHEN
    )
    policies = load(tmp_path, a=text)
    assert not policies.is_listed(ctx("crm", "refund", client="batch"))
    assert policies.is_listed(ctx("crm", "refund", client="bot"))  # denied only for some arguments
    assert not policies.is_listed(ctx("ops", "drop"))
    assert policies.is_listed(
        ctx("ops", "read", annotations={"readOnlyHint": True, "destructiveHint": False})
    )


def test_is_listed_with_an_allow_list(tmp_path: Path) -> None:
    text = (
        "[defaults]\naccess = 'deny'\n"
        "[[rules]]\nname = 'reads'\nmatch = { tools = ['get_*'] }\naccess = 'allow'\n"
        "[[rules]]\nname = 'small'\nmatch = { tools = ['refund'] }\n"
        "when = 'args.amount < 10'\naccess = 'allow'\n"
    )
    policies = load(tmp_path, a=text)
    assert policies.is_listed(ctx("crm", "get_customer"))
    assert policies.is_listed(ctx("crm", "refund"))  # allowed for some arguments
    assert not policies.is_listed(ctx("crm", "delete"))


def test_resolve_call(tmp_path: Path) -> None:
    policies = load(tmp_path, a=WHEN)
    call = ToolCall(
        server="crm",
        tool="refund",
        exposed_name="crm__refund",
        arguments={"amount": 500},
        caller=Caller(principal="bot", session_key="s"),
        request_id="r1",
        annotations={"destructiveHint": False},
    )
    assert policies.resolve_call(call).rules == ("large-refunds",)
    assert PolicyContext.for_call(call).activation()["annotations"]["readOnlyHint"] is False


def test_a_listing_never_evaluates_a_condition_on_arguments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tool pinning resolves each tool as listed, with no arguments: a rule whose ``when`` reads
    ``args`` must neither fail there nor use up its one failure log line."""
    text = (
        "[[rules]]\nname = 'big-refunds'\nwhen = 'args.amount > 100'\npinning = 'block'\n"
        "[[rules]]\nname = 'crm'\nwhen = \"server == 'crm'\"\nreminder_every = 2\n"
    )
    policies = load(tmp_path, a=text)
    with caplog.at_level(logging.WARNING, logger="interlock.policy"):
        listed = policies.resolve_listed(ctx())
        assert caplog.records == []
        assert listed.rules == ("crm",)  # a condition that needs no call still decides
        assert listed.of(PINNING).mode == "warn"
        policies.resolve(ctx(args={"other": 1}))  # a real failure, later: logged
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "policy rule 'big-refunds' (" + str(tmp_path / "policies" / "a.toml") + " rules[0])"
    ]
