"""Reference checks refuse invented ids, cache answers by TTL, and fail open on broken lookups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from gateway.core import Caller, ManualClock, ToolCall, ToolResult, build_chain
from gateway.core.errors import GatewayError, InvalidArguments, NotFound, UpstreamUnavailable
from gateway.guards.references import ReferenceCheck, ReferenceChecks, ReferenceSettings
from tests.calls import Recorder, policy_of, tool_call

pytestmark = pytest.mark.anyio

KNOWN = {"C000001": {"id": "C000001", "name": "Ada"}}

CHECK = ReferenceCheck(
    argument="customer_id",
    tool="crm__get_customer",
    arguments={"customer_id": lambda activation: activation["args"]["customer_id"]},
    source={"customer_id": "args.customer_id"},
    search_tool="crm__search_customers",
    ttl_s=60.0,
)


class Lookups:
    """The test's stand-in for the gateway pipeline that runs lookup tools; records every lookup."""

    def __init__(self, answer: ToolResult | GatewayError | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any], Caller]] = []
        self.answer = answer

    async def __call__(self, exposed_name: str, arguments: Mapping[str, Any], caller: Caller) -> ToolResult:
        self.calls.append((exposed_name, dict(arguments), caller))
        if isinstance(self.answer, GatewayError):
            raise self.answer
        if self.answer is not None:
            return self.answer
        found = KNOWN.get(arguments["customer_id"])
        if found is None:
            return ToolResult.of_text(f"Customer {arguments['customer_id']} not found", is_error=True)
        return ToolResult.of_json(found)


class Upstream(Recorder):
    def __init__(self) -> None:
        super().__init__(ToolResult.of_text("updated"))


def _call(arguments: Mapping[str, Any], *checks: ReferenceCheck) -> ToolCall:
    policy = policy_of(references=ReferenceSettings(checks or (CHECK,)))
    return tool_call("crm", "update_customer", arguments, principal="agent-7", policy=policy)


def _setup(lookups: Lookups) -> tuple[ManualClock, Upstream, Any]:
    clock = ManualClock()
    upstream = Upstream()
    return clock, upstream, build_chain([ReferenceChecks(lookups, clock)], upstream)


async def test_an_invented_id_is_refused_with_a_hint_and_never_reaches_the_upstream() -> None:
    lookups = Lookups()
    _, upstream, chain = _setup(lookups)
    with pytest.raises(InvalidArguments) as caught:
        await chain(_call({"customer_id": "C999999", "email": "a@b.c"}))
    assert upstream.calls == []
    assert caught.value.details["violations"] == [
        {
            "pointer": "/customer_id",
            "keyword": "reference",
            "expected": "an existing customer_id according to crm__get_customer",
            "given": "C999999",
        }
    ]
    assert (
        caught.value.hint
        == "Find the right customer_id with crm__search_customers; do not invent identifiers."
    )
    assert lookups.calls == [("crm__get_customer", {"customer_id": "C999999"}, Caller("agent-7", "s1"))]


async def test_an_existing_id_passes() -> None:
    lookups = Lookups()
    _, upstream, chain = _setup(lookups)
    result = await chain(_call({"customer_id": "C000001"}))
    assert result.text() == "updated" and len(upstream.calls) == 1


async def test_absent_argument_needs_no_lookup() -> None:
    lookups = Lookups()
    _, upstream, chain = _setup(lookups)
    await chain(_call({"email": "a@b.c"}))
    assert lookups.calls == [] and len(upstream.calls) == 1


async def test_answers_are_cached_within_the_ttl_and_looked_up_again_after() -> None:
    lookups = Lookups()
    clock, upstream, chain = _setup(lookups)
    await chain(_call({"customer_id": "C000001"}))
    clock.advance(59)
    await chain(_call({"customer_id": "C000001"}))
    assert len(lookups.calls) == 1
    clock.advance(2)
    await chain(_call({"customer_id": "C000001"}))
    assert len(lookups.calls) == 2
    assert len(upstream.calls) == 3


async def test_not_found_answers_are_cached_too() -> None:
    lookups = Lookups()
    _, _, chain = _setup(lookups)
    for _ in range(2):
        with pytest.raises(InvalidArguments):
            await chain(_call({"customer_id": "C999999"}))
    assert len(lookups.calls) == 1


async def test_a_not_found_error_from_the_pipeline_counts_as_missing() -> None:
    # The pipeline's classifier turns an upstream 404 into NotFound before the guard sees it.
    lookups = Lookups(NotFound("404 Not Found"))
    _, upstream, chain = _setup(lookups)
    with pytest.raises(InvalidArguments):
        await chain(_call({"customer_id": "C000001"}))
    assert upstream.calls == []


@pytest.mark.parametrize(
    "answer",
    [
        UpstreamUnavailable("crm is down"),
        ToolResult.of_text("500 Internal Server Error", is_error=True),
        ToolResult.of_text("unknown error while reading", is_error=True),
        ToolResult({"resultType": "input_required", "inputRequests": {}}),
    ],
)
async def test_a_broken_lookup_fails_open_and_is_not_cached(answer: ToolResult | GatewayError) -> None:
    lookups = Lookups(answer)
    _, upstream, chain = _setup(lookups)
    await chain(_call({"customer_id": "C999999"}))
    await chain(_call({"customer_id": "C999999"}))
    assert len(upstream.calls) == 2
    assert len(lookups.calls) == 2


async def test_a_failing_expression_fails_open() -> None:
    broken = ReferenceCheck(
        argument="customer_id", tool="crm__get_customer", arguments={"id": lambda a: 1 / 0}
    )
    lookups = Lookups()
    _, upstream, chain = _setup(lookups)
    await chain(_call({"customer_id": "C999999"}, broken))
    assert lookups.calls == [] and len(upstream.calls) == 1


async def test_every_missing_reference_is_listed() -> None:
    order_check = ReferenceCheck(
        argument="order_id",
        tool="shop__get_order",
        arguments={"customer_id": lambda a: a["args"]["order_id"], "client": lambda a: a["client"]},
    )
    lookups = Lookups()
    _, _, chain = _setup(lookups)
    with pytest.raises(InvalidArguments) as caught:
        await chain(_call({"customer_id": "C999999", "order_id": "O-1"}, CHECK, order_check))
    assert [v["pointer"] for v in caught.value.details["violations"]] == ["/customer_id", "/order_id"]
    assert "Look up an existing order_id before calling crm__update_customer" in caught.value.hint
    assert lookups.calls[1][1] == {"customer_id": "O-1", "client": "agent-7"}


async def test_lookups_that_check_references_themselves_do_not_recurse_forever() -> None:
    clock = ManualClock()
    upstream = Upstream()
    # Every call, lookups included, runs under a policy that checks customer_id against a
    # lookup tool that is never the tool being called: without a bound this would never end.
    loop_check = ReferenceCheck(
        argument="customer_id",
        tool="crm__lookup",
        arguments={"customer_id": lambda a: a["args"]["customer_id"]},
    )
    runs: list[str] = []

    async def through_the_pipeline(name: str, arguments: Mapping[str, Any], caller: Caller) -> ToolResult:
        runs.append(name)
        call = ToolCall(
            server="crm",
            tool=name,
            exposed_name=f"crm__other{len(runs)}",
            arguments=arguments,
            caller=caller,
            request_id=f"lookup{len(runs)}",
            policy=policy_of(references=ReferenceSettings((loop_check,))),
        )
        return await chain(call)

    chain = build_chain([ReferenceChecks(through_the_pipeline, clock)], upstream)
    await chain(_call({"customer_id": "C000001"}, loop_check))
    assert len(runs) == 2  # bounded by MAX_LOOKUP_DEPTH
