"""Fixture MCP server for the official conformance suite (@modelcontextprotocol/conformance).

Exposes exactly the tools, prompts and resources the suite's server scenarios call by
name, built with the MCP Python SDK (`mcp==2.3.0`). It serves both protocol eras on one
endpoint: the 2025-11-25 stateful era (initialize handshake, Mcp-Session-Id, standalone
server-to-client requests) and the 2026-07-28 stateless era (per-request `_meta`,
`server/discover`, `InputRequiredResult` multi-round trips, `subscriptions/listen`).

Run:
    python tests/conformance/everything_server.py --transport stdio
    python tests/conformance/everything_server.py --transport http --port 0
    python tests/conformance/everything_server.py --era modern ...   # 2026-07-28 only

`--era modern` refuses `initialize` (-32022), as a 2026-07-28-only server does: whoever talks to
it (the gateway, in tests/conformance/test_conformance.py) has to use the 2026-07-28 wire, where
log messages flow only for a request whose `_meta` opted in, at or above the level it asked for.

In HTTP mode it listens on 127.0.0.1 at path /mcp; with `--port 0` it picks a free port
and prints `LISTENING <port>` on stdout once the socket accepts connections.

Names and behaviours follow the scenario sources shipped in the npm package
(`dist/index.js`); see tests/conformance/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import socket
import sys
import warnings
from typing import Annotated, Any

import anyio
import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.mcpserver.resources import TextResource
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import (
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    UNSUPPORTED_PROTOCOL_VERSION,
    AudioContent,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    ElicitRequest,
    ElicitRequestFormParams,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    InputResponses,
    JSONRPCMessage,
    ListRootsRequest,
    PromptReference,
    RequestParams,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

# Logging (notifications/message), roots and logging/setLevel are deprecated in
# 2026-07-28, but the 2025-11-25 scenarios exercise them, so the fixture uses them.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

SERVER_NAME = "interlock-conformance-fixture"

# A 1x1 PNG and a tiny WAV header, as in the suite's reference fixtures.
TEST_IMAGE_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
TEST_AUDIO_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

# Every cacheable method (tools/list, prompts/list, resources/list,
# resources/templates/list, resources/read) carries ttlMs/cacheScope on 2026-07-28.
CACHE_HINTS: dict[Any, CacheHint] = {
    method: CacheHint(ttl_ms=0, scope="private")
    for method in (
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
    )
}


class InMemoryEventStore(EventStore):
    """Event store for SSE resumability (SEP-1699): replays a stream after Last-Event-ID."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, JSONRPCMessage | None]] = []
        self._counter = 0

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        self._counter += 1
        event_id = str(self._counter)
        self._events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream_id = next((sid for sid, eid, _ in self._events if eid == last_event_id), None)
        if stream_id is None:
            return None  # unknown (or non-numeric) Last-Event-ID: nothing to replay
        last = int(last_event_id)
        for sid, eid, message in self._events:
            if sid == stream_id and int(eid) > last and message is not None:
                await send_callback(EventMessage(message, eid))
        return stream_id


# --------------------------------------------------------------------------- helpers


def _is_modern(ctx: Context[Any, Any]) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _response(responses: InputResponses | None, key: str) -> dict[str, Any] | None:
    """One entry of `inputResponses` as a plain wire dict, or None when absent."""
    if not responses or key not in responses:
        return None
    value: Any = responses[key]
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, mode="json", exclude_none=True)
    return value if isinstance(value, dict) else None


def _elicit(message: str, properties: dict[str, Any], required: list[str]) -> ElicitRequest:
    schema = {"type": "object", "properties": properties, "required": required}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(text: str, max_tokens: int) -> CreateMessageRequest:
    return CreateMessageRequest(
        params=CreateMessageRequestParams(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=text))],
            max_tokens=max_tokens,
        )
    )


def _text(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)])


ASK_NAME = _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])


# --------------------------------------------------------------------------- content tools


def test_simple_text() -> str:
    """Tests simple text content response"""
    return "This is a simple text response for testing."


def test_image_content() -> list[ImageContent]:
    """Tests image content response"""
    return [ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")]


def test_audio_content() -> list[AudioContent]:
    """Tests audio content response"""
    return [AudioContent(type="audio", data=TEST_AUDIO_BASE64, mime_type="audio/wav")]


def test_embedded_resource() -> list[EmbeddedResource]:
    """Tests embedded resource content response"""
    return [
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="test://embedded-resource",
                mime_type="text/plain",
                text="This is an embedded resource content.",
            ),
        )
    ]


def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Tests response with multiple content types (text, image, resource)"""
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png"),
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="test://mixed-content-resource",
                mime_type="application/json",
                text='{"test": "data", "value": 123}',
            ),
        ),
    ]


def test_error_handling() -> str:
    """Tests error response handling"""
    raise ToolError("This tool intentionally returns an error for testing")


# --------------------------------------------------------------------------- notifications


async def test_tool_with_logging(ctx: Context[Any, Any]) -> str:
    """Tests tool that emits log messages during execution"""
    await ctx.info("Tool execution started")
    await anyio.sleep(0.05)
    await ctx.info("Tool processing data")
    await anyio.sleep(0.05)
    await ctx.info("Tool execution completed")
    return "Tool with logging executed successfully"


async def test_tool_with_progress(ctx: Context[Any, Any]) -> str:
    """Tests tool that reports progress notifications"""
    await ctx.report_progress(progress=0, total=100, message="Completed step 0 of 100")
    await anyio.sleep(0.05)
    await ctx.report_progress(progress=50, total=100, message="Completed step 50 of 100")
    await anyio.sleep(0.05)
    await ctx.report_progress(progress=100, total=100, message="Completed step 100 of 100")
    return "Tool with progress executed successfully"


async def test_reconnection(ctx: Context[Any, Any]) -> str:
    """Tests SSE polling by closing the stream mid-call (SEP-1699)"""
    await ctx.info("Before disconnect")
    await ctx.close_sse_stream()
    await anyio.sleep(0.2)  # the client reconnects with Last-Event-ID meanwhile
    await ctx.info("After reconnect")
    return "Reconnection test completed"


# --------------------------------------------------------------------------- questions to the client


async def _ask(
    ctx: Context[Any, Any], key: str, request: ElicitRequest | CreateMessageRequest
) -> dict[str, Any] | InputRequiredResult:
    """The client's answer to one question, as a wire dict.

    2025-11-25 asks mid-call with a server-to-client request. 2026-07-28 has no such requests: the
    first round returns the question as an InputRequiredResult and the retry carries the answer in
    inputResponses (a gateway bridges that back to a 2025-11-25 client's own requests).
    """
    if _is_modern(ctx):
        answer = _response(ctx.input_responses, key)
        return answer if answer is not None else InputRequiredResult(input_requests={key: request})
    result: BaseModel
    if isinstance(request, ElicitRequest):
        form = request.params
        assert isinstance(form, ElicitRequestFormParams)
        result = await ctx.session.elicit_form(
            form.message, form.requested_schema, related_request_id=ctx.request_id
        )
    else:
        asked = request.params
        result = await ctx.session.create_message(
            messages=asked.messages, max_tokens=asked.max_tokens, related_request_id=ctx.request_id
        )
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


def _form(message: str, schema: dict[str, Any]) -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _elicited(answer: dict[str, Any]) -> str:
    return f"action={answer.get('action')}, content={json.dumps(answer.get('content') or {}, sort_keys=True)}"


async def test_sampling(prompt: str, ctx: Context[Any, Any]) -> str | InputRequiredResult:
    """Tests server-initiated sampling (LLM completion request)"""
    answer = await _ask(ctx, "completion", _sample(prompt, 100))
    if isinstance(answer, InputRequiredResult):
        return answer
    content = answer.get("content")
    text = content.get("text") if isinstance(content, dict) and content.get("type") == "text" else None
    return f"LLM response: {text if isinstance(text, str) else '(non-text response)'}"


async def test_elicitation(message: str, ctx: Context[Any, Any]) -> str | InputRequiredResult:
    """Tests server-initiated elicitation (user input request)"""
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    answer = await _ask(ctx, "user_input", _form(message, schema))
    return answer if isinstance(answer, InputRequiredResult) else "User response: " + _elicited(answer)


async def test_elicitation_sep1034_defaults(ctx: Context[Any, Any]) -> str | InputRequiredResult:
    """Tests elicitation with default values for all primitive types (SEP-1034)"""
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "description": "Verification status", "default": True},
        },
    }
    answer = await _ask(ctx, "user_info", _form("Please provide user information", schema))
    return (
        answer if isinstance(answer, InputRequiredResult) else "Elicitation completed: " + _elicited(answer)
    )


async def test_elicitation_sep1330_enums(ctx: Context[Any, Any]) -> str | InputRequiredResult:
    """Tests elicitation with enum schema variations (SEP-1330)"""
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {
                "type": "string",
                "description": "Untitled single-select",
                "enum": ["option1", "option2", "option3"],
            },
            "titledSingle": {
                "type": "string",
                "description": "Titled single-select",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"},
                ],
            },
            "legacyEnum": {
                "type": "string",
                "description": "Legacy titled enum",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "description": "Untitled multi-select",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
            },
            "titledMulti": {
                "type": "array",
                "description": "Titled multi-select",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"},
                    ]
                },
            },
        },
    }
    answer = await _ask(
        ctx, "selection", _form("Please select values using different enum schema types", schema)
    )
    return (
        answer if isinstance(answer, InputRequiredResult) else "Elicitation completed: " + _elicited(answer)
    )


# ------------------------------------------------------------ 2026-07-28 diagnostics (server-stateless)


async def test_missing_capability(ctx: Context[Any, Any]) -> str:
    """Requires the client's sampling capability; rejects with -32021 when it is undeclared"""
    caps = ctx.client_capabilities
    if caps is None or caps.sampling is None:
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message="Client did not declare the sampling capability this tool requires",
            data={"requiredCapabilities": {"sampling": {}}},
        )
    return "Client declared sampling"


async def test_streaming_elicitation(ctx: Context[Any, Any]) -> CallToolResult | InputRequiredResult:
    """Asks for input on the response stream: an InputRequiredResult, never a standalone request"""
    answer = _response(ctx.input_responses, "user_name")
    if answer and answer.get("action") == "accept" and isinstance(answer.get("content"), dict):
        return _text(f"Hello, {answer['content'].get('name', 'stranger')}!")
    if not _is_modern(ctx):
        asked = await _ask(ctx, "user_name", ASK_NAME)
        assert not isinstance(asked, InputRequiredResult)  # 2025-11-25 asks mid-call
        return _text("User response: " + _elicited(asked))
    await ctx.report_progress(progress=0, total=1, message="Waiting for input")
    return InputRequiredResult(input_requests={"user_name": ASK_NAME})


async def test_logging_tool(ctx: Context[Any, Any]) -> str:
    """Emits log messages; on 2026-07-28 they are sent only if the request opted in via _meta logLevel"""
    await ctx.info("Logging tool started")
    await ctx.info("Logging tool finished")
    return "Logging tool executed"


async def test_trigger_tool_change(ctx: Context[Any, Any]) -> str:
    """Publishes notifications/tools/list_changed to subscriptions/listen streams"""
    await ctx.notify_tools_changed()
    return "Tool list change published"


async def test_trigger_prompt_change(ctx: Context[Any, Any]) -> str:
    """Publishes notifications/prompts/list_changed to subscriptions/listen streams"""
    await ctx.notify_prompts_changed()
    return "Prompt list change published"


# ------------------------------------------------------------ 2026-07-28 InputRequiredResult (SEP-2322)


async def test_input_required_result_elicitation(
    ctx: Context[Any, Any],
) -> CallToolResult | InputRequiredResult:
    """Asks for the user's name via an elicitation inputRequest, then greets them"""
    answer = _response(ctx.input_responses, "user_name")
    content = answer.get("content") if answer else None
    if answer and answer.get("action") == "accept" and isinstance(content, dict) and "name" in content:
        return _text(f"Hello, {content['name']}!")
    return InputRequiredResult(input_requests={"user_name": ASK_NAME})


async def test_input_required_result_sampling(ctx: Context[Any, Any]) -> CallToolResult | InputRequiredResult:
    """Asks the client's LLM a question via a sampling inputRequest"""
    answer = _response(ctx.input_responses, "capital_question")
    if answer and isinstance(answer.get("content"), dict | list):
        content = answer["content"]
        text = content.get("text") if isinstance(content, dict) else None
        return _text(f"LLM response: {text or '(non-text response)'}")
    return InputRequiredResult(
        input_requests={"capital_question": _sample("What is the capital of France?", 100)}
    )


async def test_input_required_result_list_roots(
    ctx: Context[Any, Any],
) -> CallToolResult | InputRequiredResult:
    """Asks for the client's roots via a roots/list inputRequest"""
    answer = _response(ctx.input_responses, "client_roots")
    if answer and isinstance(answer.get("roots"), list):
        uris = [str(root.get("uri")) for root in answer["roots"] if isinstance(root, dict)]
        return _text(f"Client roots: {', '.join(uris) or '(none)'}")
    return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})


CONFIRM = _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])


async def test_input_required_result_request_state(
    ctx: Context[Any, Any],
) -> CallToolResult | InputRequiredResult:
    """Round-trips an opaque requestState; the final text says state-ok when it came back intact"""
    answer = _response(ctx.input_responses, "confirm")
    if answer and ctx.request_state == "awaiting-confirmation":
        return _text("Confirmed: state-ok")
    return InputRequiredResult(input_requests={"confirm": CONFIRM}, request_state="awaiting-confirmation")


async def test_input_required_result_multiple_inputs(
    ctx: Context[Any, Any],
) -> CallToolResult | InputRequiredResult:
    """Asks for elicitation, sampling and roots in one InputRequiredResult"""
    keys = ("user_name", "greeting", "client_roots")
    if ctx.request_state == "multiple-inputs" and all(_response(ctx.input_responses, k) for k in keys):
        return _text("Received all input responses")
    return InputRequiredResult(
        input_requests={
            "user_name": ASK_NAME,
            "greeting": _sample("Generate a greeting", 50),
            "client_roots": ListRootsRequest(),
        },
        request_state="multiple-inputs",
    )


async def test_input_required_result_multi_round(
    ctx: Context[Any, Any],
) -> CallToolResult | InputRequiredResult:
    """Three rounds: name, then favourite colour, then the complete result"""
    step1 = _response(ctx.input_responses, "step1")
    step2 = _response(ctx.input_responses, "step2")
    if ctx.request_state and ctx.request_state.startswith("round-2:") and step2:
        color = (step2.get("content") or {}).get("color", "?")
        return _text(f"Hello {ctx.request_state.removeprefix('round-2:')}, your favorite color is {color}")
    if ctx.request_state == "round-1" and step1:
        name = (step1.get("content") or {}).get("name", "?")
        return InputRequiredResult(
            input_requests={
                "step2": _elicit(
                    "Step 2: What is your favorite color?", {"color": {"type": "string"}}, ["color"]
                )
            },
            request_state=f"round-2:{name}",
        )
    return InputRequiredResult(
        input_requests={
            "step1": _elicit("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])
        },
        request_state="round-1",
    )


async def test_input_required_result_tampered_state(
    ctx: Context[Any, Any],
) -> CallToolResult | InputRequiredResult:
    """Issues integrity-protected requestState; the SDK's RequestStateBoundary rejects a tampered echo"""
    if ctx.request_state == "integrity-protected" and _response(ctx.input_responses, "confirm"):
        return _text("State verified")
    return InputRequiredResult(input_requests={"confirm": CONFIRM}, request_state="integrity-protected")


async def test_input_required_result_capabilities(
    ctx: Context[Any, Any],
) -> CallToolResult | InputRequiredResult:
    """Only asks for input kinds the client declared in _meta clientCapabilities"""
    if ctx.input_responses:
        return _text("Received input responses")
    caps = ctx.client_capabilities
    requests: dict[str, InputRequest] = {}
    if caps is not None and caps.sampling is not None:
        requests["capital_question"] = _sample("What is the capital of France?", 100)
    if caps is not None and caps.elicitation is not None:
        requests["user_name"] = ASK_NAME
    if caps is not None and caps.roots is not None:
        requests["client_roots"] = ListRootsRequest()
    if not requests:
        return _text("The client declared no capability to ask through")
    return InputRequiredResult(input_requests=requests)


# --------------------------------------------------------------------------- schema features


JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def json_schema_2020_12_tool(**arguments: Any) -> str:
    """Tool with JSON Schema 2020-12 features"""
    return f"Received: {json.dumps(arguments, sort_keys=True)}"


def test_custom_header(
    region: Annotated[
        str,
        Field(
            description="Routing region, mirrored in Mcp-Param-Region",
            json_schema_extra={"x-mcp-header": "Region"},
        ),
    ],
) -> str:
    """Tests custom Mcp-Param headers: the region argument is mirrored in an x-mcp-header (SEP-2243)"""
    return f"Region: {region}"


def _build_tools() -> list[Tool]:
    functions = [
        # First on purpose: http-header-validation calls tools[0] with {} arguments.
        test_simple_text,
        test_image_content,
        test_audio_content,
        test_embedded_resource,
        test_multiple_content_types,
        test_error_handling,
        test_tool_with_logging,
        test_tool_with_progress,
        test_reconnection,
        test_sampling,
        test_elicitation,
        test_elicitation_sep1034_defaults,
        test_elicitation_sep1330_enums,
        test_missing_capability,
        test_streaming_elicitation,
        test_logging_tool,
        test_trigger_tool_change,
        test_trigger_prompt_change,
        test_input_required_result_elicitation,
        test_input_required_result_sampling,
        test_input_required_result_list_roots,
        test_input_required_result_request_state,
        test_input_required_result_multiple_inputs,
        test_input_required_result_multi_round,
        test_input_required_result_tampered_state,
        test_input_required_result_capabilities,
        test_custom_header,
    ]
    tools = [Tool.from_function(fn) for fn in functions]
    # The advertised inputSchema is the 2020-12 document verbatim (SEP-1613/SEP-2106).
    schema_tool = Tool.from_function(json_schema_2020_12_tool)
    tools.append(schema_tool.model_copy(update={"parameters": JSON_SCHEMA_2020_12}))
    return tools


# ------------------------------------------------------------ skills extension (SEP-2640)

SKILLS_EXTENSION = "io.modelcontextprotocol/skills"
SKILL_NAME = "conformance-demo"
SKILL_DESCRIPTION = "Demonstration skill served by the Interlock conformance fixture."
SKILL_ROOT = f"skill://{SKILL_NAME}"
SKILL_MD_URI = f"{SKILL_ROOT}/SKILL.md"
SKILL_FILES: dict[str, str] = {
    SKILL_MD_URI: (
        f"---\nname: {SKILL_NAME}\ndescription: {SKILL_DESCRIPTION}\n---\n\n"
        "# Conformance demo\n\nSee references/guide.md.\n"
    ),
    f"{SKILL_ROOT}/references/guide.md": "# Guide\n\nA file in a subdirectory of the skill.\n",
}
# Directory URI -> direct children (uri, mimeType); subdirectories are inode/directory.
SKILL_DIRECTORIES: dict[str, list[tuple[str, str]]] = {
    SKILL_ROOT: [(SKILL_MD_URI, "text/markdown"), (f"{SKILL_ROOT}/references", "inode/directory")],
    f"{SKILL_ROOT}/references": [(f"{SKILL_ROOT}/references/guide.md", "text/markdown")],
}


def _skill_entry() -> dict[str, Any]:
    files = []
    for uri, text in SKILL_FILES.items():
        raw = text.encode()
        files.append({"uri": uri, "digest": "sha256:" + hashlib.sha256(raw).hexdigest(), "size": len(raw)})
    return {
        "uri": SKILL_MD_URI,
        "frontmatter": {"name": SKILL_NAME, "description": SKILL_DESCRIPTION},
        "resources": files,
    }


def _cacheable(ctx: ServerRequestContext[Any], result: dict[str, Any]) -> dict[str, Any]:
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        result |= {"ttlMs": 0, "cacheScope": "private"}
    return result


class SkillsListParams(RequestParams):
    cursor: str | None = None


class SkillUriParams(RequestParams):
    uri: str
    cursor: str | None = None


async def skills_list(ctx: ServerRequestContext[Any], params: SkillsListParams) -> dict[str, Any]:
    return _cacheable(ctx, {"skills": [_skill_entry()]})


async def skills_get(ctx: ServerRequestContext[Any], params: SkillUriParams) -> dict[str, Any]:
    if params.uri != SKILL_MD_URI:
        raise MCPError(code=INVALID_PARAMS, message="Unknown skill", data={"uri": params.uri})
    return _cacheable(ctx, {"skill": _skill_entry()})


async def directory_read(ctx: ServerRequestContext[Any], params: SkillUriParams) -> dict[str, Any]:
    children = SKILL_DIRECTORIES.get(params.uri.rstrip("/"))
    if children is None:
        raise MCPError(code=INVALID_PARAMS, message="Not a directory", data={"uri": params.uri})
    return {
        "resources": [
            {"uri": uri, "name": uri.rsplit("/", 1)[-1], "mimeType": mime_type} for uri, mime_type in children
        ]
    }


class SkillsExtension(Extension):
    """Serves one skill (SKILL.md plus a file in a subdirectory) through skills/list, skills/get,
    resources/directory/read and resources/read."""

    identifier = SKILLS_EXTENSION

    def settings(self) -> dict[str, Any]:
        return {"directoryRead": True}

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("skills/list", SkillsListParams, skills_list),
            MethodBinding("skills/get", SkillUriParams, skills_get),
            MethodBinding("resources/directory/read", SkillUriParams, directory_read),
        ]


mcp: MCPServer[Any] = MCPServer(
    SERVER_NAME,
    version="1.0.0",
    tools=_build_tools(),
    extensions=[SkillsExtension()],
    cache_hints=CACHE_HINTS,
    log_level="WARNING",
)


# --------------------------------------------------------------------------- resources


@mcp.resource("test://static-text", name="static-text", mime_type="text/plain")
def static_text_resource() -> str:
    """A static text resource for testing"""
    return "This is the content of the static text resource."


@mcp.resource("test://static-binary", name="static-binary", mime_type="image/png")
def static_binary_resource() -> bytes:
    """A static binary resource (a 1x1 PNG) for testing"""
    return base64.b64decode(TEST_IMAGE_BASE64)


@mcp.resource("test://template/{id}/data", name="template-data", mime_type="application/json")
def template_resource(id: str) -> str:
    """A resource template with parameter substitution"""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@mcp.resource("test://watched-resource", name="watched-resource", mime_type="text/plain")
def watched_resource() -> str:
    """A resource that can be subscribed to for updates"""
    return "Watched resource content"


def _register_skill_files() -> None:
    for uri, text in SKILL_FILES.items():
        is_manifest = uri == SKILL_MD_URI
        mcp.add_resource(
            TextResource(
                uri=uri,
                name=SKILL_NAME if is_manifest else uri.rsplit("/", 1)[-1],
                description=SKILL_DESCRIPTION if is_manifest else "A file of the conformance-demo skill",
                mime_type="text/markdown",
                text=text,
            )
        )


_register_skill_files()


# --------------------------------------------------------------------------- prompts


@mcp.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """A simple prompt without arguments"""
    return [UserMessage(TextContent(type="text", text="This is a simple prompt for testing."))]


@mcp.prompt()
def test_prompt_with_arguments(
    arg1: Annotated[str, Field(description="First test argument")],
    arg2: Annotated[str, Field(description="Second test argument")],
) -> list[UserMessage]:
    """A prompt with required arguments"""
    return [
        UserMessage(TextContent(type="text", text=f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))
    ]


@mcp.prompt()
def test_prompt_with_embedded_resource(
    resourceUri: Annotated[str, Field(description="URI of the resource to embed")],
) -> list[UserMessage]:
    """A prompt that includes an embedded resource"""
    return [
        UserMessage(
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
                ),
            )
        ),
        UserMessage(TextContent(type="text", text="Please process the embedded resource above.")),
    ]


@mcp.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """A prompt that includes image content"""
    return [
        UserMessage(ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")),
        UserMessage(TextContent(type="text", text="Please analyze the image above.")),
    ]


@mcp.prompt()
async def test_input_required_result_prompt(
    ctx: Context[Any, Any],
) -> list[UserMessage] | InputRequiredResult:
    """A prompt that first asks the user for context via an elicitation inputRequest (2026-07-28)"""
    answer = _response(ctx.input_responses, "user_context")
    content = answer.get("content") if answer else None
    if answer and answer.get("action") == "accept" and isinstance(content, dict):
        return [UserMessage(TextContent(type="text", text=f"Use this context: {content.get('context', '')}"))]
    question = _elicit("What context should the prompt use?", {"context": {"type": "string"}}, ["context"])
    return InputRequiredResult(input_requests={"user_context": question})


# ------------------------------------------------------------ completion, logging, subscriptions

COMPLETION_CANDIDATES = ["test", "testing", "test-value", "paris", "park", "party"]


@mcp.completion()
async def complete(
    ref: PromptReference | ResourceTemplateReference,
    argument: CompletionArgument,
    context: CompletionContext | None,
) -> Completion:
    values = [v for v in COMPLETION_CANDIDATES if v.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


log_level: str = "info"
subscribed_uris: set[str] = set()


async def set_logging_level(ctx: ServerRequestContext[Any], params: SetLevelRequestParams) -> EmptyResult:
    global log_level
    log_level = params.level
    return EmptyResult()


async def subscribe(ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
    subscribed_uris.add(str(params.uri))
    return EmptyResult()


async def unsubscribe(ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
    subscribed_uris.discard(str(params.uri))
    return EmptyResult()


# MCPServer has no public registration for these 2025-11-25 methods; the low-level
# server's add_request_handler is the SDK's documented extension point for them.
_lowlevel = mcp._lowlevel_server
_lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_logging_level)
_lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
_lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


# --------------------------------------------------------------------------- era


async def refuse_handshake(ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
    """`--era modern`: answer `initialize` as a 2026-07-28-only server does, so a client (or a
    gateway) has to speak 2026-07-28 here, per-request log opt-in included."""
    if ctx.method == "initialize":
        requested = (ctx.params or {}).get("protocolVersion")
        data = {"supported": list(MODERN_PROTOCOL_VERSIONS), "requested": requested}
        raise MCPError(code=UNSUPPORTED_PROTOCOL_VERSION, message="Unsupported protocol version", data=data)
    return await call_next(ctx)


# --------------------------------------------------------------------------- entry point


async def serve_http(port: int) -> None:
    app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        event_store=InMemoryEventStore(),
        retry_interval=100,  # ms, sent as the SSE retry field (SEP-1699 polling)
        host="127.0.0.1",  # enables the SDK's DNS-rebinding protection for localhost
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY on accept
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    if port == 0:
        print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    await server.serve(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=3001, help="HTTP port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument(
        "--era", choices=["both", "modern"], default="both", help="modern: refuse the 2025-11-25 handshake"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.era == "modern":
        _lowlevel.middleware.insert(0, refuse_handshake)
    if args.transport == "stdio":
        mcp.run("stdio")
    else:
        asyncio.run(serve_http(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
