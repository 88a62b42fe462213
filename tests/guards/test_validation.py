"""Argument validation refuses invalid calls before the upstream, listing every violation."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from typing import Any

import pytest

from gateway.core import ToolCall, ToolResult, build_chain
from gateway.core.errors import InvalidArguments
from gateway.core.policy import ResolvedPolicy
from gateway.guards.schemas import MAX_SCHEMA_BYTES, ArgumentConstraint, SchemaCache
from gateway.guards.validation import ArgumentValidation, ValidationSettings
from gateway.guards.violations import MAX_PATTERN_INPUT_CHARS, regex_risk
from tests.calls import Recorder, policy_of, tool_call

pytestmark = pytest.mark.anyio

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer_id": {"type": "string", "pattern": "^C[0-9]{6}$"},
        "amount": {"type": "number", "minimum": 0},
        "quantity": {"type": "integer"},
        "region": {"type": "string", "enum": ["eu", "us", "apac"]},
        "api_token": {"type": "string", "minLength": 40},
        "note": {"type": "string", "maxLength": 5},
    },
    "required": ["customer_id"],
    "additionalProperties": False,
}


Upstream = Recorder


def _call(
    arguments: Mapping[str, Any],
    schema: Mapping[str, Any] | None = SCHEMA,
    *,
    version: str = "v1",
    policy: ResolvedPolicy | None = None,
) -> ToolCall:
    return tool_call(
        "crm", "update_customer", arguments, input_schema=schema, schema_version=version, policy=policy
    )


async def _refused(call: ToolCall, guard: ArgumentValidation | None = None) -> InvalidArguments:
    upstream = Upstream()
    chain = build_chain([guard or ArgumentValidation()], upstream)
    with pytest.raises(InvalidArguments) as caught:
        await chain(call)
    assert upstream.calls == []  # a refused call never reaches the upstream
    return caught.value


async def _passed(call: ToolCall, guard: ArgumentValidation | None = None) -> ToolResult:
    upstream = Upstream()
    result = await build_chain([guard or ArgumentValidation()], upstream)(call)
    assert len(upstream.calls) == 1
    return result


def _by_pointer(error: InvalidArguments) -> dict[str, dict[str, Any]]:
    return {v["pointer"]: v for v in error.details["violations"]}


async def test_valid_arguments_reach_the_upstream_unnoted() -> None:
    result = await _passed(_call({"customer_id": "C000001", "amount": 3.5}))
    assert result.notes == ()


async def test_wrong_types_list_every_violation() -> None:
    error = await _refused(
        _call({"customer_id": 42, "amount": "ten", "quantity": 1.5, "note": "far too long"})
    )
    found = _by_pointer(error)
    assert set(found) == {"/customer_id", "/amount", "/quantity", "/note"}
    assert found["/customer_id"] == {
        "pointer": "/customer_id",
        "keyword": "type",
        "expected": "a string",
        "given": 42,
    }
    assert found["/amount"]["expected"] == "a number"
    assert found["/quantity"]["expected"] == "an integer"
    assert found["/note"]["expected"] == "a string of at most 5 characters"
    assert "crm__update_customer" in error.message and "4 violations" in error.message
    assert error.hint.startswith("Fix these arguments and call again: ")
    assert "customer_id must be a string" in error.hint


async def test_pattern_violation_names_the_pattern_in_the_hint() -> None:
    error = await _refused(_call({"customer_id": "CUST-1"}))
    [violation] = error.details["violations"]
    assert violation == {
        "pointer": "/customer_id",
        "keyword": "pattern",
        "expected": "a string matching ^C[0-9]{6}$",
        "given": "CUST-1",
    }
    assert "customer_id must match ^C[0-9]{6}$" in error.hint


async def test_missing_required_property_points_at_the_property() -> None:
    error = await _refused(_call({"amount": 1}))
    assert error.details["violations"] == [
        {"pointer": "/customer_id", "keyword": "required", "expected": "required"}
    ]
    assert "customer_id is required" in error.hint


async def test_enum_lists_the_allowed_values() -> None:
    error = await _refused(_call({"customer_id": "C000001", "region": "europe"}))
    [violation] = error.details["violations"]
    assert violation["allowed"] == ["eu", "us", "apac"]
    assert violation["expected"] == "one of the allowed values"
    assert 'region must be one of ["eu", "us", "apac"]' in error.hint


async def test_unknown_property_suggests_the_nearest_name() -> None:
    error = await _refused(_call({"custmer_id": "C000001", "amont": 3}))
    found = _by_pointer(error)
    assert found["/custmer_id"]["did_you_mean"] == "customer_id"
    assert found["/custmer_id"]["keyword"] == "additionalProperties"
    assert found["/amont"]["did_you_mean"] == "amount"
    assert found["/customer_id"]["keyword"] == "required"
    assert "remove custmer_id (did you mean customer_id?)" in error.hint


async def test_secrets_are_never_echoed() -> None:
    secret = "sk-live-hunter2"
    schema = {**SCHEMA, "additionalProperties": {"type": "integer"}}
    call = _call(
        {"customer_id": "C000001", "api_token": secret, "Authorization": secret, "nested": [secret]}, schema
    )
    error = await _refused(call)
    found = _by_pointer(error)
    assert found["/api_token"]["given"] == "<redacted>"
    assert found["/Authorization"]["given"] == "<redacted>"
    everything = json.dumps(error.details) + error.message + error.hint
    assert everything.count(secret) == 1  # only /nested, whose name is not secret-looking
    assert found["/nested"]["given"] == [secret]


async def test_given_values_are_cut_short() -> None:
    error = await _refused(_call({"customer_id": "C" * 500}))
    given = error.details["violations"][0]["given"]
    assert len(given) == 80 and given.endswith("…")


async def test_violations_are_capped() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(30)}}
    error = await _refused(_call({f"p{i}": "x" for i in range(30)}, schema))
    assert len(error.details["violations"]) == 20
    assert "at least 20 violations" in error.message
    assert "and 15 more" in error.hint


async def test_draft_07_is_honoured() -> None:
    # `dependencies` is a draft-07 keyword; 2020-12 ignores it.
    base = {"type": "object", "dependencies": {"refund": ["reason"]}}
    await _passed(_call({"refund": True}, base))
    for uri in ("http://json-schema.org/draft-07/schema#", "https://json-schema.org/draft-07/schema"):
        error = await _refused(_call({"refund": True}, {"$schema": uri, **base}, version=uri))
        assert error.details["violations"][0]["keyword"] == "dependencies"


async def test_remote_ref_is_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def no_network(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise AssertionError("network access during validation")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    schema = {"type": "object", "properties": {"customer": {"$ref": "http://127.0.0.1:1/customer.json"}}}
    result = await _passed(_call({"customer": {"id": 1}}, schema))
    assert result.notes == ("schema_skipped",)
    assert attempts == []


async def test_a_ref_to_a_bundled_metaschema_resolves_without_network() -> None:
    schema = {"type": "object", "properties": {"s": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}}
    error = await _refused(_call({"s": {"type": 5}}, schema))
    assert error.details["violations"][0]["pointer"].startswith("/s")


async def test_local_refs_resolve_and_a_dangling_one_skips_the_version() -> None:
    schema = {
        "type": "object",
        "properties": {"id": {"$ref": "#/$defs/id"}, "other": {"$ref": "#/$defs/missing"}},
        "$defs": {"id": {"type": "string"}},
    }
    guard = ArgumentValidation()
    await _refused(_call({"id": 7}, schema), guard)
    result = await _passed(_call({"id": "x", "other": 1}, schema), guard)
    assert result.notes == ("schema_skipped",)
    # From now on this version is skipped, even for arguments that would have failed.
    assert (await _passed(_call({"id": 7}, schema), guard)).notes == ("schema_skipped",)


async def test_huge_schema_is_skipped_not_blocking() -> None:
    blob = "x" * 1024
    schema = {"type": "object", "properties": {f"p{i}": {"description": blob} for i in range(300)}}
    assert len(json.dumps(schema)) > MAX_SCHEMA_BYTES
    result = await _passed(_call({"p1": "anything"}, schema))
    assert result.notes == ("schema_skipped",)


async def test_invalid_and_deep_schemas_are_skipped() -> None:
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(100):
        deep = {"type": "object", "properties": {"a": deep}}
    for schema in ({"type": "object", "properties": {"a": {"type": "nonsense"}}}, deep):
        result = await _passed(_call({"a": 1}, schema, version=str(id(schema))))
        assert result.notes == ("schema_skipped",)


async def test_compiled_once_per_tool_version() -> None:
    cache = SchemaCache()
    guard = ArgumentValidation(cache)
    for _ in range(5):
        await _passed(_call({"customer_id": "C000001"}), guard)
    await _refused(_call({"customer_id": 1}), guard)
    assert cache.compilations == 1 and cache.hits == 5
    await _passed(_call({"customer_id": "C000001"}, version="v2"), guard)
    assert cache.compilations == 2


async def test_without_a_version_the_schema_object_is_the_version() -> None:
    cache = SchemaCache()
    guard = ArgumentValidation(cache)
    await _passed(_call({"customer_id": "C000001"}, version=""), guard)
    await _passed(_call({"customer_id": "C000001"}, version=""), guard)
    assert cache.compilations == 1
    other = {"type": "object", "properties": {"customer_id": {"type": "integer"}}}
    await _refused(_call({"customer_id": "C000001"}, other, version=""), guard)
    assert cache.compilations == 2


async def test_cache_is_bounded() -> None:
    cache = SchemaCache(max_entries=2)
    guard = ArgumentValidation(cache)
    for version in ("a", "b", "c", "a"):
        await _passed(_call({"customer_id": "C000001"}, version=version), guard)
    assert cache.compilations == 4  # "a" was evicted by "c"


async def test_operator_constraints_apply_on_top_of_the_schema() -> None:
    constraints = {
        "customer_id": ArgumentConstraint(pattern="^C00"),
        "amount": ArgumentConstraint(maximum=100),
        "region": ArgumentConstraint(enum=("eu",)),
        "note": ArgumentConstraint(min_length=2),
    }
    policy = policy_of(argument_validation=ValidationSettings(constraints=constraints))
    cache = SchemaCache()
    guard = ArgumentValidation(cache)
    await _passed(_call({"customer_id": "C000001", "amount": 100, "region": "eu"}, policy=policy), guard)
    error = await _refused(
        _call({"customer_id": "C100001", "amount": 101, "region": "us", "note": "x"}, policy=policy), guard
    )
    found = _by_pointer(error)
    assert found["/customer_id"]["expected"] == "a string matching ^C00"
    assert found["/amount"]["expected"] == "a number <= 100"
    assert found["/region"]["allowed"] == ["eu"]  # the operator's enum, checked with the schema's
    assert found["/note"]["expected"] == "a string of at least 2 characters"
    # Equal constraints in a freshly resolved policy reuse the compiled validator.
    fresh = policy_of(argument_validation=ValidationSettings(constraints=dict(constraints)))
    await _passed(_call({"customer_id": "C000001"}, policy=fresh), guard)
    assert cache.compilations == 1


async def test_constraints_apply_when_schema_validation_is_off_or_schema_unusable() -> None:
    constraints = {"customer_id": ArgumentConstraint(max_length=7)}
    off = policy_of(argument_validation=ValidationSettings(enabled=False, constraints=constraints))
    await _passed(_call({"customer_id": 42}, policy=off))  # the upstream schema is not checked
    await _refused(_call({"customer_id": "C0000001"}, policy=off))
    broken = {"type": "object", "properties": {"customer_id": {"type": 7}}}
    with_constraints = policy_of(argument_validation=ValidationSettings(constraints=constraints))
    error = await _refused(_call({"customer_id": "C0000001"}, broken, policy=with_constraints))
    assert error.details["violations"][0]["keyword"] == "maxLength"


async def test_constraints_keep_local_refs_of_the_schema_working() -> None:
    schema = {
        "type": "object",
        "properties": {"customer_id": {"$ref": "#/$defs/id"}},
        "$defs": {"id": {"type": "string"}},
    }
    policy = policy_of(
        argument_validation=ValidationSettings(constraints={"customer_id": ArgumentConstraint(pattern="^C")})
    )
    error = await _refused(_call({"customer_id": 5}, schema, policy=policy))
    assert [v["keyword"] for v in error.details["violations"]] == ["type"]
    await _refused(_call({"customer_id": "X"}, schema, policy=policy))
    await _passed(_call({"customer_id": "C1"}, schema, policy=policy))


def test_regex_risk_flags_catastrophic_patterns() -> None:
    for risky in (r"^(a+)+$", r"(\w*\s?)*$", r"^\d*\d*\d*$", r"^([a-z0-9]+(-[a-z0-9]+)*\.)+[a-z]{2,}$"):
        assert regex_risk(risky) is not None, risky
    for safe in (r"^C[0-9]{6}$", r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$", r"^(\d{3}-)?\d{4}$", r"\s*,\s*"):
        assert regex_risk(safe) is None, safe


async def test_catastrophic_and_long_inputs_are_left_to_the_upstream() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}, "b": {"pattern": "^C"}},
    }
    # (a+)+$ against "aaaa…!" would backtrack for hours; the pattern is not checked.
    await _passed(_call({"a": "a" * 40 + "!"}, schema))
    await _refused(_call({"b": "X"}, schema))
    await _passed(_call({"b": "X" * (MAX_PATTERN_INPUT_CHARS + 1)}, schema))
