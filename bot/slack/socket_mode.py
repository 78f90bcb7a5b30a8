"""The Socket Mode connection, kept alive, and its envelopes checked before Bolt reads them.

slack-sdk's aiohttp client pings every ``ping_interval`` seconds and rebuilds the
connection (a fresh ``apps.connections.open`` URL) once no pong has come back for four
intervals, or as soon as the socket closes. Slack's own default of 10 s lets a silently dead
connection swallow slash commands for 40-50 s; 5 s bounds that near 20-25 s at one small
frame each way every 5 s.

Bolt builds its request (reading team, user, enterprise) before dispatching, so an envelope
of the wrong shape is refused here, as over HTTP: acknowledged (Slack would resend it),
not dispatched, and logged through the app's refusal log.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.config import Secret
from bot.slack.app import ObservedApp
from bot.slack.refusals import RefusalLog
from bot.slack.request_shape import shape_problem

PING_INTERVAL = 5.0


class CheckedAsyncSocketModeHandler(AsyncSocketModeHandler):
    def __init__(self, app: AsyncApp, app_token: str, *, refusals: RefusalLog, **kwargs: Any):
        super().__init__(app, app_token, **kwargs)
        self.refusals = refusals

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        problem = shape_problem(req.payload)
        if problem is None:
            await super().handle(client, req)
            return
        self.refusals.refused(400, problem)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))


def socket_mode_handler(
    app: AsyncApp, app_token: Secret, *, ping_interval: float = PING_INTERVAL
) -> AsyncSocketModeHandler:
    refusals = app.refusals if isinstance(app, ObservedApp) else RefusalLog()
    return CheckedAsyncSocketModeHandler(
        app, app_token.reveal(), refusals=refusals, ping_interval=ping_interval
    )
