"""Routing of upstream-to-client requests (2025-11-25 era) to the client that made the call.

On a shared upstream connection the SDK does not say which of our in-flight calls an
``elicitation/create`` or ``sampling/createMessage`` belongs to (over stdio the wire carries no
relation at all). The gateway therefore routes by what it knows: the calls in flight on that
connection. When they all come from one client session, that session gets the request; when
several sessions have calls in flight the request is refused rather than shown to the wrong human.
In the 2026-07-28 era this ambiguity does not exist: input requests ride the call's own result.
"""

from __future__ import annotations

import logging
from typing import Any

import mcp_types as types
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from gateway.core.backchannel import BackChannel

log = logging.getLogger("interlock.upstream")


class BackRouter:
    def __init__(self, server: str) -> None:
        self.server = server
        self.inflight: dict[str, BackChannel] = {}

    def pick(self) -> BackChannel | None:
        channels = list(self.inflight.values())
        if not channels:
            return None
        keys = {c.session_key for c in channels}
        return channels[-1] if len(keys) == 1 else None

    async def _forward(
        self, capability: str, method: str, params: BaseModel
    ) -> dict[str, Any] | types.ErrorData:
        channel = self.pick()
        if channel is None:
            # Servers ask for roots on their own at start (no call in flight): routine, so debug.
            # An elicitation or sampling request refused this way loses a tool its answer.
            level = logging.DEBUG if capability == "roots" else logging.WARNING
            log.log(
                level,
                "%s sent %s with no single calling session to route it to; refused",
                self.server,
                method,
            )
            return types.ErrorData(
                code=types.INVALID_REQUEST, message=f"no unambiguous client session to route {method} to"
            )
        if channel.capabilities.get(capability) is None:
            return types.ErrorData(
                code=types.INVALID_REQUEST, message=f"the calling client does not support {capability}"
            )
        try:
            return await channel.request(
                method, params.model_dump(by_alias=True, mode="json", exclude_none=True)
            )
        except MCPError as exc:
            return exc.error

    async def sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        raw = await self._forward("sampling", "sampling/createMessage", params)
        if isinstance(raw, types.ErrorData):
            return raw
        if isinstance(raw.get("content"), list):
            return types.CreateMessageResultWithTools.model_validate(raw, by_name=False)
        return types.CreateMessageResult.model_validate(raw, by_name=False)

    async def elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        raw = await self._forward("elicitation", "elicitation/create", params)
        if isinstance(raw, types.ErrorData):
            return raw
        return types.ElicitResult.model_validate(raw, by_name=False)

    async def roots(self, context: ClientRequestContext) -> types.ListRootsResult | types.ErrorData:
        raw = await self._forward("roots", "roots/list", types.RequestParams())
        if isinstance(raw, types.ErrorData):
            return raw
        return types.ListRootsResult.model_validate(raw, by_name=False)

    async def log_message(self, params: types.LoggingMessageNotificationParams) -> None:
        channel = self.pick()
        if channel is None:
            # No one call to hear it (none in flight, or several sessions'): the operator may still.
            log.debug("%s log (%s, %s): %s", self.server, params.level, params.logger or "-", params.data)
            return
        await channel.notify(
            "notifications/message", params.model_dump(by_alias=True, mode="json", exclude_none=True)
        )
