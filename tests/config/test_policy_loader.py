"""Loading policies/*.toml: the shipped files, the folder rules, and every kind of load error."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, PolicyContext, PolicyError, PolicySet
from gateway.core.policy import DEFAULT_POLICY
from gateway.guards.access import ACCESS
from gateway.guards.classify import CLASSIFY
from gateway.guards.output import OUTPUT, SIZE_CAP
from gateway.guards.pinning import PINNING
from gateway.guards.references import REFERENCES
from gateway.guards.reminders import REMINDERS
from gateway.guards.retry import RETRY
from gateway.guards.rewrite import HINTS
from gateway.guards.traits import TRAITS
from gateway.guards.validation import VALIDATION
from gateway.pipeline import load_policies

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
DEFAULT_TOML = POLICIES / "default.toml"
EXAMPLE_TOML = POLICIES / "examples" / "example.toml"


def ctx(
    server: str = "crm",
    tool: str = "get_customer",
    *,
    exposed: str | None = None,
    client: str = "anonymous",
    args: dict[str, Any] | None = None,
    annotations: dict[str, Any] | None = None,
    session: str = "s1",
) -> PolicyContext:
    """A call of ``server``'s ``tool``, exposed as ``server__tool`` unless said otherwise."""
    return PolicyContext(
        server=server,
        tool=tool,
        exposed=exposed or f"{server}__{tool}",
        client=client,
        args=args or {},
        annotations=annotations or {},
        session=session,
    )


def folder(tmp_path: Path, **files: str) -> Path:
    """A policies folder holding ``files`` (name without .toml -> text)."""
    path = tmp_path / "policies"
    path.mkdir(exist_ok=True)
    for name, text in files.items():
        (path / f"{name}.toml").write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, **files: str) -> PolicySet:
    return load_policies(folder(tmp_path, **files))


def errors(tmp_path: Path, **files: str) -> list[str]:
    """The lines of the load error, with the folder replaced by ``policies``."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **files)
    return str(info.value).replace(str(tmp_path / "policies"), "policies").splitlines()


def shipped(tmp_path: Path) -> PolicySet:
    path = folder(tmp_path)
    shutil.copy(DEFAULT_TOML, path / "default.toml")
    shutil.copy(EXAMPLE_TOML, path / "50-example.toml")
    return load_policies(path)


# --- the shipped files ----------------------------------------------------------------------------


def test_default_toml_turns_every_guard_on(tmp_path: Path) -> None:
    path = folder(tmp_path)
    shutil.copy(DEFAULT_TOML, path / "default.toml")
    policy = load_policies(path).resolve(ctx())
    assert policy.of(ACCESS).access == "allow"
    assert policy.of(VALIDATION).enabled is True
    assert policy.of(OUTPUT).mode == "warn"
    assert policy.of(PINNING).mode == "warn"
    assert policy.of(TRAITS).trust_annotations is False
    assert policy.of(TRAITS).idempotent is None and not policy.of(TRAITS).is_idempotent(
        {"readOnlyHint": True}
    )
    assert policy.of(SIZE_CAP).max_result_bytes == 200_000
    assert policy.of(RETRY).max_attempts == 3
    assert policy.rules == ()


def test_the_repository_folder_loads_without_the_example() -> None:
    policies = load_policies(POLICIES)
    assert DEFAULT_TOML in policies.files
    assert all(path.parent == POLICIES for path in policies.files)
    assert "crm-refunds" not in {rule.name for rule in policies.rules}


def test_the_example_loads_next_to_the_defaults(tmp_path: Path) -> None:
    policies = shipped(tmp_path)
    assert [p.name for p in policies.files] == ["50-example.toml", "default.toml"]
    names = [rule.name for rule in policies.rules]
    assert "crm-refunds" in names and "flaky-quotes" in names
    refund = policies.resolve(
        ctx("crm", "refund", client="support-bot", args={"customer_id": "C000123", "amount": 20})
    )
    assert refund.of(ACCESS).access == "allow"
    assert refund.of(TRAITS).idempotent is False
    assert [r.tool for r in refund.of(REFERENCES).checks] == ["crm__get_customer"]
    assert refund.of(REFERENCES).checks[0].search_tool == "crm__search_customers"
    assert refund.of(VALIDATION).constraints["customer_id"].pattern == "^C[0-9]{6}$"
    assert refund.of(REMINDERS).texts and refund.of(REMINDERS).every == 3
    large = policies.resolve(ctx("crm", "refund", client="support-bot", args={"amount": 700}))
    assert large.of(ACCESS).access == "deny" and "forbidden" in large.of(HINTS).hints
    quote = policies.resolve(ctx("flaky", "get_quote"))
    assert quote.of(TRAITS).is_idempotent({}) and quote.of(RETRY).max_attempts == 4
    assert [p.code for p in quote.of(CLASSIFY).patterns] == ["upstream_unavailable"]


# --- the folder -----------------------------------------------------------------------------------


def test_missing_or_empty_folder_gives_the_builtin_defaults(tmp_path: Path) -> None:
    for policies in (load_policies(tmp_path / "absent"), load(tmp_path)):
        assert policies.files == ()
        assert policies.resolve(ctx()) == DEFAULT_POLICY


def test_a_file_instead_of_a_folder_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "policies"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="is a file, not a folder of policy files"):
        load_policies(path)


def test_files_load_by_name_top_level_only(tmp_path: Path) -> None:
    path = folder(tmp_path, b='[[rules]]\nname = "b"\n', a='[[rules]]\nname = "a"\n')
    (path / ".hidden.toml").write_text("not toml at all [", encoding="utf-8")
    (path / "notes.md").write_text("[", encoding="utf-8")
    (path / "sub").mkdir()
    (path / "sub" / "c.toml").write_text('[[rules]]\nname = "c"\n', encoding="utf-8")
    policies = load_policies(path)
    assert [p.name for p in policies.files] == ["a.toml", "b.toml"]
    assert [rule.name for rule in policies.rules] == ["a", "b"]


def test_digest_follows_the_contents(tmp_path: Path) -> None:
    first = load(tmp_path, a='[[rules]]\nname = "a"\n').digest
    assert load(tmp_path, a='[[rules]]\nname = "a"\n').digest == first
    assert load(tmp_path, a='[[rules]]\nname = "a"\naccess = "deny"\n').digest != first
    (tmp_path / "policies" / "a.toml").rename(tmp_path / "policies" / "b.toml")
    assert load_policies(tmp_path / "policies").digest != first
    assert load_policies(tmp_path / "none").digest != first


# --- load errors: the file, the key path, what was expected ---------------------------------------

RULE = '[[rules]]\nname = "r"\n'


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "[defaults]\ntimout_s = 3\n",
            "policies/crm.toml: defaults.timout_s: unknown key (allowed: access, approval, arguments,",
        ),
        (RULE + "timout_s = 3\n", "policies/crm.toml: rules[0].timout_s: unknown key (allowed: name, match"),
        (RULE + "timout_s = 3\n", "did you mean 'timeout_s'?"),
        (
            RULE + 'match = { server = ["crm"] }\n',
            "policies/crm.toml: rules[0].match.server: unknown key (allowed: servers, tools, clients); "
            "did you mean 'servers'?",
        ),
        (
            RULE + "match = { tools = [] }\n",
            "policies/crm.toml: rules[0].match.tools: expected at least one item, got an empty list",
        ),
        (
            RULE + 'match = { tools = "x" }\n',
            "policies/crm.toml: rules[0].match.tools: expected a list, got 'x'",
        ),
        ("[[rules]]\naccess = 'deny'\n", "policies/crm.toml: rules[0].name: required key is missing"),
        (
            '[[rules]]\nname = "a b"\n',
            "policies/crm.toml: rules[0].name: expected only letters, digits, '_', '.' and '-', got 'a b'",
        ),
        (
            RULE + 'access = "block"\n',
            "policies/crm.toml: rules[0].access: expected 'allow' or 'deny', got 'block'",
        ),
        (
            RULE + 'output_validation = "loud"\n',
            "policies/crm.toml: rules[0].output_validation: expected 'off', 'warn' or 'block', got 'loud'",
        ),
        (RULE + "timeout_s = 0\n", "policies/crm.toml: rules[0].timeout_s: expected a number > 0, got 0"),
        (
            RULE + "max_result_bytes = true\n",
            "policies/crm.toml: rules[0].max_result_bytes: expected an integer",
        ),
        (
            RULE + "reminder_every = 0\n",
            "policies/crm.toml: rules[0].reminder_every: expected a number > 0, got 0",
        ),
        (
            RULE + 'reminder = ""\n',
            "policies/crm.toml: rules[0].reminder: expected a non-empty value, got ''",
        ),
        (
            RULE + "retry = { max_attempts = 0 }\n",
            "policies/crm.toml: rules[0].retry.max_attempts: expected a number >= 1, got 0",
        ),
        (
            RULE + "retry = { base_delay_s = 2, max_delay_s = 1 }\n",
            "policies/crm.toml: rules[0].retry.max_delay_s: must be >= base_delay_s (2)",
        ),
        (
            RULE + 'hints = { forbidden = "" }\n',
            "policies/crm.toml: rules[0].hints.forbidden: expected a non-empty value, got ''",
        ),
        (
            RULE + 'hints = { upstream_timeot = "wait" }\n',
            "policies/crm.toml: rules[0].hints.upstream_timeot: unknown error code 'upstream_timeot' "
            "(expected one of: internal_error, unknown_tool,",
        ),
        (RULE + 'hints = { upstream_timeot = "wait" }\n', "did you mean 'upstream_timeout'?"),
        (
            "[[defaults.error_patterns]]\ncode = 'internal_error'\npattern = 'x'\n",
            "policies/crm.toml: defaults.error_patterns[0].code: unknown error code 'internal_error' "
            "(expected one of: invalid_arguments,",
        ),
        (
            "[[defaults.error_patterns]]\ncode = 'upstream_error'\npattern = '('\n",
            "policies/crm.toml: defaults.error_patterns[0].pattern: invalid regular expression: "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            RULE + 'arguments = { id = { pattern = "[" } }\n',
            "policies/crm.toml: rules[0].arguments.id.pattern: invalid regular expression: "
            "unterminated character set at position 0",
        ),
        (
            RULE + "arguments = { n = { minimum = 3, maximum = 1 } }\n",
            "policies/crm.toml: rules[0].arguments.n.maximum: must be >= minimum (3)",
        ),
        (
            RULE + "arguments = { n = { min_length = 3, max_length = 1 } }\n",
            "policies/crm.toml: rules[0].arguments.n.max_length: must be >= min_length (3)",
        ),
        (
            RULE + "arguments = { n = { enum = [] } }\n",
            "policies/crm.toml: rules[0].arguments.n.enum: expected at least one item, got an empty list",
        ),
        (
            RULE + "arguments = { n = { minimun = 1 } }\n",
            "policies/crm.toml: rules[0].arguments.n.minimun: unknown key (allowed: pattern, enum, minimum, "
            "maximum, min_length, max_length); did you mean 'minimum'?",
        ),
        (
            RULE + "[[rules.references]]\nargument = 'id'\n",
            "policies/crm.toml: rules[0].references[0].tool: required key is missing",
        ),
        (
            RULE + "[[rules.references]]\nargument = 'id'\ntool = 'crm get'\n",
            "policies/crm.toml: rules[0].references[0].tool: expected 1 to 128 letters, digits,",
        ),
        (RULE + "approve = true\n", "policies/crm.toml: rules[0].approve: unknown key (allowed: name,"),
        (
            "[rule]\n",
            "policies/crm.toml: rule: unknown key (allowed: defaults, rules); did you mean 'rules'?",
        ),
        ("[[rules]\n", "policies/crm.toml: line 1, column 8: invalid TOML: expected ']]'"),
        ("rules = 3\n", "policies/crm.toml: rules: expected a list, got 3"),
    ],
)
def test_load_error(tmp_path: Path, text: str, line: str) -> None:
    found = errors(tmp_path, crm=text)
    assert any(line in got for got in found), found


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (
            "args.amount >",
            "invalid CEL at line 1, column 14: mismatched input '<EOF>' expecting",
        ),
        ("args.amount > 1 &&\n  (", "invalid CEL at line 2, column 4:"),
        (
            "argz.amount > 1",
            "unknown variable 'argz' (available: server, tool, exposed, args, client, session, annotations); "
            "did you mean 'args'?",
        ),
        ("   ", "expected an expression, got an empty string"),
        (
            "args.a.all(x, args.b.exists(y, y == x))",
            "comprehensions (all, exists, exists_one, map, filter) may not",
        ),
    ],
)
def test_cel_compile_error_names_the_rule(tmp_path: Path, when: str, message: str) -> None:
    rules = "".join(f'[[rules]]\nname = "r{i}"\n' for i in range(3))
    text = rules + f'[[rules]]\nname = "r3"\nwhen = """{when}"""\n'
    found = errors(tmp_path, crm=text)
    assert len(found) == 1 and found[0].startswith(f"policies/crm.toml: rules[3].when: {message}"), found


def test_cel_in_reference_arguments_is_compiled(tmp_path: Path) -> None:
    text = RULE + "[[rules.references]]\nargument = 'id'\ntool = 't'\narguments = { id = 'args.id +' }\n"
    [line] = errors(tmp_path, crm=text)
    assert line.startswith("policies/crm.toml: rules[0].references[0].arguments.id: invalid CEL at line 1")


def test_cel_errors_come_with_model_errors(tmp_path: Path) -> None:
    text = '[[rules]]\nname = "r"\ntimeout_s = "x"\nwhen = "args >"\n'
    assert [line.split(": ")[1] for line in errors(tmp_path, crm=text)] == [
        "rules[0].timeout_s",
        "rules[0].when",
    ]


def test_duplicate_rule_names_across_files(tmp_path: Path) -> None:
    found = errors(tmp_path, a=RULE, b='[[rules]]\nname = "x"\n' + RULE)
    assert found == [
        "policies/b.toml: rules[1].name: duplicate rule name 'r' (first in policies/a.toml rules[0])"
    ]


def test_one_defaults_table_across_files(tmp_path: Path) -> None:
    found = errors(tmp_path, a="[defaults]\ntimeout_s = 1\n", b="[defaults]\ntimeout_s = 2\n")
    assert found == [
        "policies/b.toml: defaults: [defaults] is already set in policies/a.toml; only one file may set it"
    ]


def test_every_file_and_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load(tmp_path, a=RULE + "timeout_s = 0\nreminder = ''\n", b="[[rules]\n")
    error = info.value
    assert isinstance(error, ConfigError)
    assert [e.file for e in error.errors] == [f"{tmp_path}/policies/a.toml", f"{tmp_path}/policies/b.toml"]
    assert len(str(error).splitlines()) == 3
    assert error.file == f"{tmp_path}/policies/a.toml" and len(error.problems) == 3
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_problems_come_in_document_order(tmp_path: Path) -> None:
    text = '[[rules]]\nname = "r"\nwhen = "x >"\ntimeout_s = -1\n[[rules]]\nname = "s"\nzzz = 1\n'
    assert [line.split(": ")[1] for line in errors(tmp_path, crm=text)] == [
        "rules[0].when",
        "rules[0].timeout_s",
        "rules[1].zzz",
    ]
