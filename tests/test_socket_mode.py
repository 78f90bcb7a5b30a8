"""A Socket Mode connection that goes silent is rebuilt, and commands flow on the new one.

The peer is the Slack stand-in's real WebSocket, taught to stop answering pings: the bot's
client must notice on its own (no close frame ever comes) and connect again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Secret
from bot.sandbox.slack_standin import Call, SlackStandIn
from bot.slack.socket_mode import socket_mode_handler

PING = 0.5


class GoesSilent(SlackStandIn):
    """Answers pings until ``silent``; then the connection is open but dead."""

    def __init__(self) -> None:
        super().__init__()
        self.silent = False
        self.connections = 0

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        self._sockets.append(ws)
        self.connections += 1
        await ws.send_json({"type": "hello", "num_connections": 1})
        async for msg in ws:
            if msg.type == WSMsgType.PING and not self.silent:
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.TEXT and not self.silent:
                body = json.loads(msg.data)
                await self._record(Call("socket_ack", str(body.get("envelope_id")), body, {}))
        return ws


@pytest.fixture
async def standin() -> AsyncIterator[GoesSilent]:
    server = GoesSilent()
    await server.start()
    yield server
    await server.stop()


def command_app(standin: SlackStandIn) -> AsyncApp:
    app = AsyncApp(
        client=AsyncWebClient(token="xoxb-socket-test", base_url=f"{standin.url}/api/"),
        request_verification_enabled=False,
        process_before_response=True,
    )

    @app.command("/hss-sync")
    async def answer(ack: AsyncAck) -> None:
        await ack(text="still here")

    return app


async def wait_until(predicate: object, timeout: float) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def open_sockets(standin: SlackStandIn) -> int:
    return standin.socket_clients


async def test_a_connection_that_stops_answering_pings_is_rebuilt(standin: GoesSilent) -> None:
    handler = socket_mode_handler(
        command_app(standin), Secret("xapp-1-socket-test"), ping_interval=PING
    )
    await handler.connect_async()  # type: ignore[no-untyped-call]
    try:
        await wait_until(lambda: standin.connections == 1, 5)
        await asyncio.sleep(3 * PING)  # healthy: pings answered, nothing rebuilt
        assert standin.connections == 1

        standin.silent = True
        await wait_until(lambda: standin.connections == 2, 10 * PING + 5)
        standin.silent = False
        await wait_until(lambda: open_sockets(standin) == 1, 5)

        envelope = await standin.send_envelope(
            "slash_commands",
            {"command": "/hss-sync", "text": "help", "user_id": "U1", "channel_id": "C1"},
        )
        calls = await standin.wait_for(
            lambda cs: any(c.kind == "socket_ack" and c.name == envelope for c in cs),
            timeout=5.0,
        )
        ack = next(c.body for c in calls if c.kind == "socket_ack" and c.name == envelope)
        assert ack["payload"]["text"] == "still here"
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
