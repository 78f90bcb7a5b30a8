"""A local stand-in for the Slack Web API and for ``response_url``: it records every call.

Tests and the demo point the bot's ``SLACK_API_URL`` at ``{url}/api/`` and hand out
``response_url``s under ``{url}/response/``; everything the bot posts lands in ``calls``.
Scripted failures (``fail_next``) let tests see how the bot copes with 429s and errors.
In Socket Mode, ``apps.connections.open`` hands out this server's WebSocket, and
``send_envelope`` delivers a command or click to the bot exactly as Slack would; the bot's
acks are recorded as ``Call("socket_ack", envelope_id, ...)``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

BOT_USER_ID = "UHSSBOT01"
TEAM_ID = "T0STANDIN"


@dataclass(frozen=True, slots=True)
class Call:
    """One request the bot made: a Web API method or a ``response_url`` post."""

    kind: str  # "api" or "response"
    name: str  # method name, or the response_url id
    body: dict[str, Any]
    headers: dict[str, str]
    #: What the stand-in answered (a Web API call's JSON, e.g. the ``ts`` of a new message).
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scripted:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (a slow Slack).
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel the stand-in knows by name (``conversations.info`` answers with it)."""

    id: str
    name: str
    is_member: bool = True
    is_archived: bool = False


class SlackStandIn:
    def __init__(self, channels: Sequence[Channel] = ()) -> None:
        self.calls: list[Call] = []
        #: Channels by id; any other id is answered as a channel the bot is in, so tests
        #: need not declare every channel they use.
        self.channels = {c.id: c for c in channels}
        self._scripted: dict[str, list[Scripted]] = {}
        self._ts = itertools.count(1)
        #: Ids of views and ephemeral messages: apart, so message ts stay as tests expect.
        self._others = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._envelopes = itertools.count(1)
        self.url = ""

    # --- control ---

    def fail_next(self, method: str, *responses: Scripted) -> None:
        """Answer the next calls of ``method`` with these responses, in order."""
        self._scripted.setdefault(method, []).extend(responses)

    def response_url(self, ident: str) -> str:
        return f"{self.url}/response/{ident}"

    def api(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.kind == "api" and c.name == method]

    def responses(self, ident: str) -> list[Call]:
        return [c for c in self.calls if c.kind == "response" and c.name == ident]

    async def calls_after(self, seen: int, timeout: float | None = None) -> list[Call]:
        """The calls recorded after the first ``seen``, waiting until there is one."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.calls) > seen), timeout)
            return self.calls[seen:]

    async def wait_for(
        self, predicate: Callable[[list[Call]], bool], timeout: float = 10.0
    ) -> list[Call]:
        """Wait until ``predicate(calls)`` holds; returns the calls then."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.calls)), timeout)
            return list(self.calls)

    # --- server ---

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        # Some methods (conversations.info, usergroups.users.list) are sent as GET.
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/response/{ident}", self._response)
        app.router.add_get("/socket", self._socket)
        return app

    # --- Socket Mode ---

    @property
    def socket_clients(self) -> int:
        return sum(1 for ws in self._sockets if not ws.closed)

    async def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        """Deliver ``payload`` (``slash_commands`` or ``interactive``) to a connected bot."""
        envelope_id = f"env{next(self._envelopes)}"
        message = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind == "slash_commands",
        }
        socket = next(ws for ws in self._sockets if not ws.closed)
        await socket.send_json(message)
        return envelope_id

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1})
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                body = json.loads(msg.data)
                ident = str(body.get("envelope_id", ""))
                await self._record(Call("socket_ack", ident, body, {}))
        return ws

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        for ws in self._sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await _body(request)
        scripted = self._scripted.get(method)
        s = scripted.pop(0) if scripted else Scripted(body=self._ok(method, body))
        if s.delay:
            await asyncio.sleep(s.delay)
        await self._record(Call("api", method, body, _headers(request), s.body))
        return web.json_response(s.body, status=s.status, headers=s.headers)

    async def _response(self, request: web.Request) -> web.Response:
        body = await _body(request)
        await self._record(Call("response", request.match_info["ident"], body, _headers(request)))
        return web.Response(text="ok")

    def _ok(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://standin.slack.com/",
                "team": "Stand-in",
                "user": "hss-sync-bot",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": "BHSSBOT01",
            }
        if method == "conversations.info":
            ident = str(body.get("channel", ""))
            known = self.channels.get(ident, Channel(ident, ident.lower()))
            channel = {
                "id": ident,
                "name": known.name,
                "is_member": known.is_member,
                "is_archived": known.is_archived,
            }
            return {"ok": True, "channel": channel}
        if method == "apps.connections.open":
            return {"ok": True, "url": self.url.replace("http://", "ws://") + "/socket"}
        if method == "views.open":
            view = body.get("view")
            view = json.loads(view) if isinstance(view, str) else view
            return {"ok": True, "view": {**(view or {}), "id": f"V{next(self._others):08d}"}}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"1600000000.{next(self._others):06d}"}
        if method in ("chat.postMessage", "chat.update"):
            ts = body.get("ts") or f"1700000000.{next(self._ts):06d}"
            return {"ok": True, "channel": body.get("channel", ""), "ts": ts, "message": body}
        return {"ok": True}


async def _body(request: web.Request) -> dict[str, Any]:
    if request.method == "GET":
        return dict(request.query)
    raw = await request.text()
    if request.content_type == "application/json":
        parsed: dict[str, Any] = json.loads(raw) if raw else {}
        return parsed
    form: dict[str, Any] = dict(parse_qsl(raw))
    for key in ("blocks", "attachments"):
        if isinstance(form.get(key), str):
            form[key] = json.loads(form[key])
    return form


def _headers(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
