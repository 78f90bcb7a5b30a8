"""The Socket Mode connection, kept alive.

slack-sdk's aiohttp client pings every ``ping_interval`` seconds and rebuilds the
connection (a fresh ``apps.connections.open`` URL) once no pong has come back for four
intervals, or as soon as the socket closes. Slack's own default of 10 s lets a silently dead
connection swallow slash commands for 40-50 s; 5 s bounds that near 20-25 s at one small
frame each way every 5 s.
"""

from __future__ import annotations

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

from bot.config import Secret

PING_INTERVAL = 5.0


def socket_mode_handler(
    app: AsyncApp, app_token: Secret, *, ping_interval: float = PING_INTERVAL
) -> AsyncSocketModeHandler:
    return AsyncSocketModeHandler(app, app_token.reveal(), ping_interval=ping_interval)
