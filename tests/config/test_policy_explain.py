"""`interlock policy explain`: every rule, matched or not and why, then the resolved policy."""

from __future__ import annotations

from pathlib import Path

from gateway.config import ExplainStep, explain_text
from gateway.pipeline import load_policies

from .test_policy_loader import ctx, load, shipped


def test_explain_steps(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        a="[defaults]\ntimeout_s = 3\n"
        "[[rules]]\nname = 'crm-only'\nmatch = { servers = ['crm'], clients = ['support-*'] }\n"
        "[[rules]]\nname = 'jobs-only'\nmatch = { servers = ['jobs'] }\nwhen = 'args.x > 1'\n"
        "[[rules]]\nname = 'big'\nwhen = 'args.amount > 100'\n",
    )
    steps = policies.explain(ctx(client="bot", args={"amount": 5}))
    assert steps[0] == ExplainStep(
        "[defaults]", str(tmp_path / "policies" / "a.toml"), True, ("always applies",)
    )
    assert [(s.rule, s.matched) for s in steps[1:]] == [
        ("crm-only", False),
        ("jobs-only", False),
        ("big", False),
    ]
    assert steps[1].reasons == (
        "server 'crm' matches 'crm'",
        "client 'bot' matches none of 'support-*'",
    )
    assert steps[2].reasons[-1] == "when: not evaluated"
    assert steps[3].reasons == ("no match table: applies to every call", "when `args.amount > 100` is false")


def test_explain_text_shows_rules_and_result(tmp_path: Path) -> None:
    policies = shipped(tmp_path)
    call = ctx("crm", "refund", client="support-bot", args={"customer_id": "C000123", "amount": 700})
    text = explain_text(policies, call)
    assert "Policy for crm__refund (server 'crm', upstream tool 'refund'), client 'support-bot'" in text
    assert 'args: {"customer_id": "C000123", "amount": 700}' in text
    lines = text.splitlines()

    def row(rule: str) -> str:
        return next(line for line in lines if f" {rule} " in line)

    assert row("[defaults]").split()[0] == "applied"
    assert row("crm-refunds").split()[0] == "MATCHED"
    assert row("crm-large-refunds").split()[0] == "MATCHED"
    assert row("flaky-quotes").split()[0] == "no"
    assert "server 'crm' matches none of 'flaky'" in text
    assert "when `args.amount > 500 && !client.startsWith('supervisor')` is true" in text
    assert (
        "resolved policy (rules applied: crm-customer-ids, crm-refunds, crm-large-refunds, "
        "crm-refund-approval, crm-pinning)" in text
    )
    assert "  access              deny" in lines
    assert (
        "  approval            rule=crm-refund-approval when `args.amount > 100` timeout_s=900 "
        "mode=elicit fallback=defer approvers=any admin or the client redact=email"
    ) in lines
    assert "  idempotent          false (policy)" in lines
    assert "  timeout_s           10" in lines
    assert any(
        line.startswith("  arguments.amount") and "minimum=0.01 maximum=5000" in line for line in lines
    )
    assert any(
        "customer_id must exist: crm__get_customer {customer_id = args.customer_id}" in line for line in lines
    )
    assert any(line.startswith("  reminder ") for line in lines)


def test_explain_text_on_builtin_defaults(tmp_path: Path) -> None:
    text = explain_text(load_policies(tmp_path / "none"), ctx())
    assert "files: none (built-in defaults)" in text
    assert "  (none)" in text
    assert "resolved policy (rules applied: none):" in text
    assert "  idempotent          false (annotations not trusted)" in text.splitlines()
