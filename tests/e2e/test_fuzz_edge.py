"""Protocol fuzzing of the downstream edge: hostile and buggy clients over raw HTTP, both eras.

One gateway (its own, so that a regression here cannot break the shared stack) in front of three
fixture upstreams: ``fs`` over stdio (either era), ``fl`` over stdio (2025-11-25 only) and ``fh``
over Streamable HTTP. Every case must get a JSON-RPC error or a result, never a 5xx, a plain-text
answer or silence; afterwards a well-behaved client must still be served by every upstream.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from tests.e2e.raw import (
    LEGACY,
    META,
    MODERN,
    call,
    jsonrpc_error,
    legacy_headers,
    messages,
    modern_headers,
    open_session,
    post,
    request,
)
from tests.support import (
    FIXTURE_SERVER,
    ROOT,
    Proc,
    gateway,
    http_fixture,
    http_server_toml,
    stdio_server_toml,
)

pytestmark = pytest.mark.anyio

MAX_BODY = 65_536
SERVERS = ("fs", "fl", "fh")
# The guards have their own tests; here they would only turn fuzz into refusals of the next case.
RELAXED_POLICY = """
[[rules]]
name = "fuzz"
match = { servers = ["fs", "fl", "fh"] }
breaker = { enabled = false }
loops = { enabled = false }
rate_limits = [{ name = "per-client", limit = 100000, period_s = 1, burst = 100000, key = ["client"] }]
"""


@dataclass
class Edge:
    gateway: Proc
    records: dict[str, Path]
    session: str

    @property
    def url(self) -> str:
        return self.gateway.mcp_url

    def recorded(self, server: str) -> list[dict[str, Any]]:
        path = self.records[server]
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "default.toml").write_text((ROOT / "policies" / "default.toml").read_text())
    (tmp / "policies" / "50-fuzz.toml").write_text(RELAXED_POLICY)
    records = {sid: tmp / f"{sid}.jsonl" for sid in SERVERS}
    with http_fixture(tmp, "--record", str(records["fh"]), name="fh") as upstream:
        config = (
            f"[gateway]\nmax_body_bytes = {MAX_BODY}\ncall_timeout_s = 5\n\n"
            + stdio_server_toml("fs", FIXTURE_SERVER, "--name", "fs", "--record", str(records["fs"]))
            + stdio_server_toml(
                "fl", FIXTURE_SERVER, "--name", "fl", "--era", "legacy", "--record", str(records["fl"])
            )
            + http_server_toml("fh", upstream.mcp_url)
        )
        with gateway(config, tmp) as gw:
            yield Edge(gw, records, open_session(gw.mcp_url))


async def _well_behaved_clients_are_served(edge: Edge) -> None:
    for mode in ("legacy", "auto"):
        with anyio.fail_after(30):
            async with Client(edge.url, mode=mode) as client:
                for sid in SERVERS:
                    result = await client.call_tool(f"{sid}__echo", {"text": f"{mode} still served"})
                    assert result.structured_content == {"text": f"{mode} still served"}, (sid, result)
    assert edge.gateway.proc.poll() is None, edge.gateway.log()[-3000:]


# -- one defect, one test --------------------------------------------------------------------------


async def test_a_lone_surrogate_is_refused_and_kills_no_upstream(edge: Edge) -> None:
    """2026-07-28 bodies were parsed by json.loads, which keeps a lone surrogate; forwarding it made
    the SDK's stdio writer raise, which killed the upstream for every client."""
    async with httpx2.AsyncClient() as client:
        for sid in SERVERS:
            raw = json.dumps(call(f"{sid}__echo", {"text": "a\ud800b"}, modern=True))
            assert "\\ud800" in raw
            response = await post(client, edge.url, raw, modern_headers(json.loads(raw)))
            assert response.status_code == 400
            error = jsonrpc_error(response, -32700)["error"]
            assert "surrogate" in error["message"]
            legacy = json.dumps(call(f"{sid}__echo", {"text": "\udc00"}))
            jsonrpc_error(await post(client, edge.url, legacy, legacy_headers(edge.session)), -32700)
    for sid in SERVERS:
        assert all("\ud800" not in json.dumps(r) for r in edge.recorded(sid))
    await _well_behaved_clients_are_served(edge)


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_nesting_too_deep_for_an_upstream_is_refused_at_once(edge: Edge, era: str) -> None:
    """The 2026-07-28 path accepted nesting that Python upstreams silently drop: the call then hung
    until its timeout and came back as outcome_unknown."""
    deep = "[" * 300 + "]" * 300
    for sid in ("fs", "fh"):
        tool = f"{sid}__echo"
        meta = f',"_meta":{json.dumps(META)}' if era == "modern" else ""
        arguments = f'{{"text":"x","deep":{deep}}}'
        params = f'{{"name":"{tool}","arguments":{arguments}{meta}}}'
        raw = f'{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{params}}}'
        headers = modern_headers(call(tool, {})) if era == "modern" else legacy_headers(edge.session)
        async with httpx2.AsyncClient() as client:
            response = await post(client, edge.url, raw, headers)
        assert response.status_code == 400, response.text[:300]
        assert "nested deeper" in jsonrpc_error(response, -32700)["error"]["message"]


@pytest.mark.parametrize("rid", [None, 1.5, {"a": 1}, [1], True])
async def test_a_request_id_of_the_wrong_type_is_answered_not_dropped(edge: Edge, rid: Any) -> None:
    """The 2025-11-25 path answered 202 Accepted to a request whose id is not a string or an
    integer, and never replied: the client waited forever."""
    marker = f"id-{json.dumps(rid)}"
    async with httpx2.AsyncClient() as client:
        legacy = json.dumps(call("fl__echo", {"text": marker}, rid=rid))
        response = await post(client, edge.url, legacy, legacy_headers(edge.session))
        assert response.status_code == 400, (response.status_code, response.text)
        assert jsonrpc_error(response, -32600)["id"] is None
        modern = call("fs__echo", {"text": marker}, modern=True, rid=rid)
        response = await post(client, edge.url, json.dumps(modern), modern_headers(modern))
        assert response.status_code == 400
        jsonrpc_error(response, -32600)
    assert all(r["arguments"] != {"text": marker} for r in edge.recorded("fl") + edge.recorded("fs"))


async def test_a_request_id_still_in_flight_in_the_session_is_refused(edge: Edge) -> None:
    """The SDK keeps one response stream per id in a session: a second request with the same id took
    over the first one's stream, and the first request was never answered."""
    rid = "twice-used"
    slow = json.dumps(call("fs__slow", {"seconds": 1, "steps": 1}, rid=rid))
    echo = json.dumps(call("fs__echo", {"text": "same id"}, rid=rid))
    headers = legacy_headers(edge.session)
    first: list[httpx2.Response] = []
    async with httpx2.AsyncClient(timeout=30) as client:

        async def send_first() -> None:
            first.append(await post(client, edge.url, slow, headers))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_first)
                while not any(r["tool"] == "slow" for r in edge.recorded("fs")):  # noqa: ASYNC110 (another process writes it)
                    await anyio.sleep(0.01)  # until the upstream holds the first call
                second = await post(client, edge.url, echo, headers)
                assert second.status_code == 400
                assert "in flight" in jsonrpc_error(second, -32600)["error"]["message"]
        (answer,) = messages(first[0])
        assert answer["id"] == rid and answer["result"]["content"][0]["text"].startswith("slept"), answer
        # Once answered, the id is free again.
        (again,) = messages(await post(client, edge.url, echo, headers))
        assert again["result"]["structuredContent"] == {"text": "same id"}


BROKEN_ENVELOPES: list[tuple[str, Any]] = [
    ("empty batch", []),
    ("batch", [call("fs__echo", {"text": "in a batch"})]),
    ("a number", 42),
    ("a string", "tools/call"),
    ("no method", {"jsonrpc": "2.0", "id": 3}),
    ("method not a string", {"jsonrpc": "2.0", "id": 3, "method": 5}),
    ("params a list", {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": [1, 2]}),
    ("params a string", {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": "x"}),
    ("jsonrpc 1.0", {"jsonrpc": "1.0", "id": 3, "method": "tools/list"}),
]


@pytest.mark.parametrize(("label", "message"), BROKEN_ENVELOPES, ids=[b[0] for b in BROKEN_ENVELOPES])
async def test_a_broken_envelope_is_an_invalid_request(edge: Edge, label: str, message: Any) -> None:
    """The 2025-11-25 path called these -32602 (invalid params) with a pydantic dump as message."""
    async with httpx2.AsyncClient() as client:
        for headers in (legacy_headers(edge.session), modern_headers(message)):
            response = await post(client, edge.url, json.dumps(message), headers)
            assert response.status_code == 400
            error = jsonrpc_error(response, -32600)["error"]
            assert "validation error" not in error["message"].lower(), error
            assert len(error["message"]) < 200, error


async def test_a_body_over_the_limit_gets_payload_too_large_as_json_rpc(edge: Edge) -> None:
    """docs/errors.md promises payload_too_large as a JSON-RPC error; it was a plain-text 413."""
    async with httpx2.AsyncClient() as client:
        near = json.dumps(call("fs__echo", {"text": "n" * (MAX_BODY - 200)}))
        response = await post(client, edge.url, near, legacy_headers(edge.session))
        assert response.status_code == 200
        over = json.dumps(call("fs__echo", {"text": "o" * (MAX_BODY + 10)}))
        declared = await post(client, edge.url, over, legacy_headers(edge.session))

        async def chunks() -> Any:  # no Content-Length: the limit must hold while reading
            for start in range(0, len(over), 8192):
                yield over[start : start + 8192].encode()

        with anyio.fail_after(30):
            streamed = await client.post(edge.url, content=chunks(), headers=legacy_headers(edge.session))
    for response in (declared, streamed):
        assert response.status_code == 413
        error = jsonrpc_error(response, -32602)["error"]
        assert error["data"]["error"]["code"] == "payload_too_large"
        assert error["data"]["error"]["details"]["limit_bytes"] == MAX_BODY
    assert not any(str(r["arguments"].get("text", "")).startswith("ooo") for r in edge.recorded("fs"))


async def test_header_refusals_are_json_rpc_errors(edge: Edge) -> None:
    """Content-Type, Host and Origin refusals were plain text, which JSON-RPC clients cannot read."""
    body = json.dumps(call("fs__echo", {"text": "headers"}))
    cases = [
        ({"Content-Type": "text/plain"}, 400),
        ({"Origin": "http://evil.example"}, 403),
        ({"Host": "attacker.example"}, 421),
    ]
    async with httpx2.AsyncClient() as client:
        for change, status in cases:
            response = await post(client, edge.url, body, {**legacy_headers(edge.session), **change})
            assert response.status_code == status
            jsonrpc_error(response, -32600)


WRONG_PARAMS: list[tuple[str, dict[str, Any], str]] = [
    ("arguments as JSON text", {"name": "fs__echo", "arguments": '{"text": "hi"}'}, "params.arguments"),
    ("arguments as a list", {"name": "fs__echo", "arguments": ["hi"]}, "params.arguments"),
    ("name missing", {"arguments": {"text": "hi"}}, "params.name"),
    ("name a number", {"name": 5, "arguments": {}}, "params.name"),
    ("_meta a list", {"name": "fs__echo", "arguments": {"text": "hi"}, "_meta": [1]}, "params._meta"),
]


@pytest.mark.parametrize(("label", "params", "path"), WRONG_PARAMS, ids=[w[0] for w in WRONG_PARAMS])
async def test_wrong_typed_params_say_which_field_is_wrong(
    edge: Edge, label: str, params: dict[str, Any], path: str
) -> None:
    """The SDK answers any malformed params with a bare "Invalid request parameters"; an agent that
    sent arguments as JSON text (a common model mistake) could not tell what to fix."""
    async with httpx2.AsyncClient() as client:
        legacy = request("tools/call", params, rid=9)
        response = await post(client, edge.url, json.dumps(legacy), legacy_headers(edge.session))
        error = jsonrpc_error(response, -32602)["error"]
        assert path in error["message"], error
        assert any(e["path"] == path for e in error["data"]["errors"]), error
        if label == "arguments as JSON text":
            assert "JSON object, not" in error["message"], error


# -- the fuzz run ------------------------------------------------------------------------------------

SEED = 20_260_728
CASES = 400
IN_FLIGHT = 16
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**63, 10**30, 1.5, -0.0, 1e308, "", "x", "é" * 50, "\u0000", "😀",
    "x" * 5000, [], {}, [[[]]], {"a": {"b": None}}, "fs__echo", MODERN, LEGACY, {"text": "hi"},
]  # fmt: skip
HEADER_TWEAKS: list[dict[str, str]] = [
    {"Content-Type": "text/plain"},
    {"Content-Type": "application/json; charset=latin-1"},
    {"Accept": "text/html"},
    {"Accept": "application/json"},
    {"MCP-Protocol-Version": "1999-01-01"},
    {"MCP-Protocol-Version": "2099-12-31"},
    {"MCP-Protocol-Version": ""},
    {"Mcp-Session-Id": "not-a-session"},
    {"Mcp-Session-Id": ""},
    {"Mcp-Method": "tools/list"},
    {"Mcp-Name": "nobody"},
]


def _corpus(session: str) -> list[tuple[dict[str, Any], bool]]:
    """Valid messages of both eras (message, modern?), the starting points of every mutation."""
    bodies: list[dict[str, Any]] = []
    for sid in SERVERS:
        bodies += [
            {"method": "tools/call", "params": {"name": f"{sid}__echo", "arguments": {"text": "seed"}}},
            {"method": "tools/call", "params": {"name": f"{sid}__add", "arguments": {"a": 1, "b": 2}}},
        ]
    bodies += [
        {"method": "tools/list", "params": {}},
        {"method": "resources/read", "params": {"uri": "fs://fixture/static/hello"}},
        {"method": "prompts/get", "params": {"name": "fs__greet", "arguments": {"name": "Ada"}}},
        {"method": "completion/complete", "params": {
            "ref": {"type": "ref/prompt", "name": "fs__greet"}, "argument": {"name": "name", "value": "A"}}},
        {"method": "ping", "params": {}},
        {"method": "notifications/cancelled", "params": {"requestId": 1}},
    ]  # fmt: skip
    corpus: list[tuple[dict[str, Any], bool]] = []
    for index, body in enumerate(bodies):
        for modern in (False, True):
            message: dict[str, Any] = {"jsonrpc": "2.0", **json.loads(json.dumps(body))}
            if not message["method"].startswith("notifications/"):
                message["id"] = index + 1
            if modern:
                message["params"]["_meta"] = dict(META)
            corpus.append((message, modern))
    return corpus


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _nodes(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _nodes(child, (*path, index))
    return found


def _mutate_value(rng: random.Random, message: Any) -> Any:
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_nodes(message))
        if not path:
            message = rng.choice([[message], [], rng.choice(ODD_VALUES)])
            continue
        parent = message
        for step in path[:-1]:
            parent = parent[step]
        op = rng.random()
        if op < 0.6:
            parent[path[-1]] = json.loads(json.dumps(rng.choice(ODD_VALUES)))
        elif op < 0.8 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rng.choice(["extra", "_meta", "id", "method", "params", "cursor"])] = rng.choice(
                ODD_VALUES
            )
    return message


def _mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    op = rng.randrange(6)
    cut = rng.randrange(len(raw) + 1)
    if op == 0:
        return raw[:cut]  # truncated
    if op == 1:
        return raw[:cut] + bytes([rng.randrange(256)]) + raw[cut + 1 :]  # one byte flipped
    if op == 2:
        return raw[:cut] + b"\xff\xfe\xc3" + raw[cut:]  # invalid UTF-8
    if op == 3:
        return raw.replace(b'"seed"', b'"\\ud800"').replace(b'"Ada"', b'"\\udfff"')  # lone surrogates
    if op == 4:
        depth = rng.choice([50, 199, 201, 400, 2000])
        return raw.replace(b'"seed"', b"[" * depth + b"]" * depth)
    return raw + rng.choice([b"", b" ", b"{}", b"\x00", b"]"])


def _fuzz_case(
    rng: random.Random, corpus: list[tuple[dict[str, Any], bool]], session: str
) -> tuple[bytes, dict[str, str]]:
    base, modern = rng.choice(corpus)
    message = json.loads(json.dumps(base))
    if rng.random() < 0.7:
        message = _mutate_value(rng, message)
    raw = json.dumps(message).encode()
    if rng.random() < 0.3:
        raw = _mutate_bytes(rng, raw)
    headers = modern_headers(message) if modern else legacy_headers(session)
    if rng.random() < 0.2:
        headers = {**headers, **rng.choice(HEADER_TWEAKS)}
    return raw, headers


def _check_answer(response: httpx2.Response, raw: bytes) -> None:
    context = (raw[:200], response.status_code, response.text[:300])
    assert response.status_code < 500, context
    if response.status_code == 202:
        assert response.content == b"", context
        return
    if response.status_code in (405, 406) and not response.content:
        return  # HTTP-level refusals without a body, before any JSON-RPC is read
    found = messages(response)
    assert found, context
    final = found[-1]
    assert final.get("jsonrpc") == "2.0", context
    if "error" in final:
        assert isinstance(final["error"].get("code"), int), context
        assert isinstance(final["error"].get("message"), str) and final["error"]["message"], context
    else:
        assert isinstance(final.get("result"), dict), context


async def test_seeded_fuzz_run_gets_an_answer_for_every_case_and_the_gateway_keeps_serving(
    edge: Edge,
) -> None:
    rng = random.Random(SEED)
    corpus = _corpus(edge.session)
    cases = [_fuzz_case(rng, corpus, edge.session) for _ in range(CASES)]
    limiter = anyio.Semaphore(IN_FLIGHT)

    async def one(client: httpx2.AsyncClient, raw: bytes, headers: dict[str, str]) -> None:
        async with limiter:
            _check_answer(await post(client, edge.url, raw, headers), raw)

    with anyio.fail_after(120):
        async with httpx2.AsyncClient(timeout=30) as client, anyio.create_task_group() as tg:
            for raw, headers in cases:
                tg.start_soon(one, client, raw, headers)
    await _well_behaved_clients_are_served(edge)
    assert "Traceback" not in edge.gateway.log(), edge.gateway.log()[-4000:]


async def test_a_concurrent_flood_of_sessions_and_garbage_leaves_every_client_answered(edge: Edge) -> None:
    garbage = [b"{", b"[]", b"\xff", json.dumps(call("fs__echo", {"text": "\ud800"}, modern=True)).encode()]

    async def good(client: httpx2.AsyncClient, index: int) -> None:
        session = await anyio.to_thread.run_sync(open_session, edge.url)
        sid = SERVERS[index % len(SERVERS)]
        body = json.dumps(call(f"{sid}__echo", {"text": f"flood {index}"}, rid=index))
        (message,) = messages(await post(client, edge.url, body, legacy_headers(session)))
        assert message["result"]["structuredContent"] == {"text": f"flood {index}"}, message
        delete = await client.delete(edge.url, headers=legacy_headers(session))
        assert delete.status_code == 200
        after = await post(client, edge.url, body, legacy_headers(session))
        assert after.status_code == 404, after.text
        jsonrpc_error(after, -32600)

    async def bad(client: httpx2.AsyncClient, index: int) -> None:
        raw = garbage[index % len(garbage)]
        response = await post(client, edge.url, raw, modern_headers({"method": "tools/call"}))
        assert response.status_code == 400
        messages(response)

    with anyio.fail_after(120):
        async with httpx2.AsyncClient(timeout=30) as client, anyio.create_task_group() as tg:
            for index in range(60):
                tg.start_soon(good, client, index)
                tg.start_soon(bad, client, index)
    await _well_behaved_clients_are_served(edge)
