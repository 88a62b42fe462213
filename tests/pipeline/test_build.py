"""``build_pipeline``: the guards of every stage, folded once, each refusal naming its guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core import ManualClock, ToolCall, ToolResult
from gateway.core.errors import GatewayError, UpstreamUnavailable
from gateway.observe.metrics import Metrics
from gateway.observe.observer import observer
from gateway.pipeline import GUARD_NAMES, GuardDeps, build_guards, build_pipeline, load_policies
from gateway.state import MemoryStateStore
from tests.calls import tool_call

pytestmark = pytest.mark.anyio

POLICY = """
[[rules]]
name = "no-refunds"
match = { tools = ["refund"] }
access = "deny"

[[rules]]
name = "searches"
match = { tools = ["search"] }
rate_limits = [{ name = "searches", limit = 1, period_s = 60 }]

[[rules]]
name = "ids"
match = { tools = ["get_customer"] }
arguments = { customer_id = { pattern = "^C[0-9]{6}$" } }

[[rules]]
name = "store-down-closes"
match = { tools = ["closed"] }
rate_limit_on_store_error = "closed"
rate_limits = [{ name = "closed", limit = 100, period_s = 1 }]
"""


class Upstream:
    """Answers ``ok``; ``down`` fails as an unreachable server would."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, call: ToolCall) -> ToolResult:
        self.calls.append(call.tool)
        if call.tool == "down":
            raise UpstreamUnavailable("crm is not reachable")
        if call.tool == "says_429":
            return ToolResult.of_text("429 Too Many Requests", is_error=True)
        return ToolResult.of_text("ok")


class Rig:
    def __init__(self, tmp: Path) -> None:
        (tmp / "p").mkdir()
        (tmp / "p" / "rules.toml").write_text(POLICY)
        self.policies = load_policies(tmp / "p")
        self.clock = ManualClock()
        self.store = MemoryStateStore(self.clock)
        self.upstream = Upstream()
        self.metrics = Metrics()

        async def lookup(*_: object) -> ToolResult:
            raise AssertionError("no reference checks here")

        self.deps = GuardDeps(
            resolver=self.policies.resolve_call, clock=self.clock, store=self.store, lookup=lookup
        )
        self.chain = build_pipeline(self.deps, self.upstream, observe=observer(self.metrics))

    async def refused(self, tool: str, arguments: dict[str, object] | None = None) -> GatewayError:
        with pytest.raises(GatewayError) as caught:
            await self.chain(tool_call("crm", tool, arguments or {"customer_id": "C000001"}))
        return caught.value

    def refusals(self) -> str:
        return "\n".join(
            line for line in self.metrics.render().decode().splitlines() if line.startswith("interlock_guard")
        )


async def test_every_guard_is_built_once_in_order_and_the_gate_only_with_its_service(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    names = [name for name, _ in build_guards(rig.deps)]
    assert names == [name for name in GUARD_NAMES if name != "approval"]  # no approval service here


async def test_each_refusal_names_its_guard(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    denied = await rig.refused("refund")
    assert (denied.code, denied.refused_by) == ("forbidden", "access")
    invalid = await rig.refused("get_customer", {"customer_id": "nope"})
    assert (invalid.code, invalid.refused_by) == ("invalid_arguments", "argument_validation")
    assert invalid.payload(server="crm", tool="crm__get_customer", request_id="r")["details"]["guard"] == (
        "argument_validation"
    )
    assert await rig.chain(tool_call("crm", "search", {"q": "a"}))  # the first search is admitted
    limited = await rig.refused("search", {"q": "b"})
    assert (limited.code, limited.refused_by) == ("rate_limited", "rate_limits")
    assert rig.upstream.calls == ["search"], "no refused call reached the upstream"
    metrics = rig.refusals()
    assert 'code="forbidden",guard="access",server="crm",tool="refund"} 1.0' in metrics
    assert 'code="rate_limited",guard="rate_limits",server="crm",tool="search"} 1.0' in metrics
    assert 'code="invalid_arguments",guard="argument_validation"' in metrics


async def test_the_upstreams_own_failures_name_no_guard(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    down = await rig.refused("down")
    said = await rig.refused("says_429")  # classified from the upstream's text: still the upstream's
    for err in (down, said):
        assert err.refused_by is None
        assert "guard" not in err.payload(server="crm", tool="t", request_id="r")["details"]
    assert (down.code, said.code) == ("upstream_unavailable", "upstream_rate_limited")
    assert "interlock_guard_refusals_total{" not in rig.refusals()


async def test_a_store_outage_is_its_own_code_not_a_rate_limit(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    async def down(*_: object, **__: object) -> object:
        from gateway.state.base import StoreUnavailable

        raise StoreUnavailable("connection refused")

    rig.store.gcra = down  # type: ignore[method-assign]
    err = await rig.refused("closed", {"x": 1})
    assert (err.code, err.refused_by, err.retryable) == ("state_unavailable", "rate_limits", True)
    assert "state store" in err.hint
