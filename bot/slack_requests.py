"""Slack's side of the conversation: signed slash-command and button requests.

The demo and the tests send these to the bot's ``/slack/events`` exactly as Slack would,
signed with the signing secret (``v0:{timestamp}:{body}``), so the bot's real request
verification, acks and ``response_url`` replies are exercised.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.slack_standin import TEAM_ID

_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Reply:
    """The bot's HTTP answer to one request (the ack) and the response_url id it was given."""

    status: int
    body: dict[str, Any]
    response_id: str
    elapsed: float


class SlackUser:
    """One person typing commands and clicking buttons in one channel."""

    def __init__(
        self,
        *,
        bot_url: str,
        signing_secret: str,
        response_base: str,
        http: httpx.AsyncClient,
        user_id: str = "U0DEMO0001",
        channel_id: str = "C0DEMO0001",
        command: str = "/hss-sync",
    ) -> None:
        self._events = bot_url.rstrip("/") + "/slack/events"
        self._verifier = SignatureVerifier(signing_secret)
        self._response_base = response_base.rstrip("/")
        self._http = http
        self.user_id = user_id
        self.channel_id = channel_id
        self.command = command

    async def command_text(self, text: str) -> Reply:
        ident = f"cmd{next(_counter)}"
        form = {
            "token": "legacy-unused",
            "team_id": TEAM_ID,
            "channel_id": self.channel_id,
            "channel_name": "demo",
            "user_id": self.user_id,
            "user_name": "demo.user",
            "command": self.command,
            "text": _slack_escape(text),
            "response_url": f"{self._response_base}/{ident}",
            "trigger_id": f"trigger.{ident}",
            "api_app_id": "A0HSSSYNC",
        }
        return await self._post(urlencode(form), ident)

    async def click(self, button: dict[str, Any]) -> Reply:
        """Click a button element taken from a message the bot sent."""
        ident = f"act{next(_counter)}"
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM_ID, "domain": "standin"},
            "user": {"id": self.user_id, "username": "demo.user", "team_id": TEAM_ID},
            "api_app_id": "A0HSSSYNC",
            "container": {"type": "message", "is_ephemeral": True},
            "channel": {"id": self.channel_id, "name": "demo"},
            "trigger_id": f"trigger.{ident}",
            "response_url": f"{self._response_base}/{ident}",
            "actions": [
                {
                    "type": "button",
                    "action_id": button["action_id"],
                    "block_id": button.get("block_id", "b"),
                    "value": button.get("value", ""),
                    "text": button.get("text", {}),
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return await self._post(urlencode({"payload": json.dumps(payload)}), ident)

    async def event(self, event: dict[str, Any]) -> Reply:
        """An Events API delivery (JSON), e.g. ``{"type": "app_home_opened", ...}``."""
        ident = f"evt{next(_counter)}"
        envelope = {
            "token": "legacy-unused",
            "team_id": TEAM_ID,
            "api_app_id": "A0HSSSYNC",
            "type": "event_callback",
            "event_id": f"Ev{ident}",
            "event_time": int(time.time()),
            "event": {"user": self.user_id, **event},
        }
        return await self._post(json.dumps(envelope), ident, content_type="application/json")

    async def _post(
        self,
        body: str,
        ident: str,
        *,
        timestamp: int | None = None,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> Reply:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": str(self._verifier.generate_signature(timestamp=ts, body=body)),
        }
        started = time.perf_counter()
        response = await self._http.post(self._events, content=body, headers=headers)
        elapsed = time.perf_counter() - started
        parsed: dict[str, Any] = {}
        if response.content and response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            parsed = response.json()
        return Reply(status=response.status_code, body=parsed, response_id=ident, elapsed=elapsed)


def _slack_escape(text: str) -> str:
    # Slack encodes these three in command text before sending it.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Every button of a message, with its block id, in order."""
    found: list[dict[str, Any]] = []
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("type") == "button":
                found.append({**element, "block_id": block.get("block_id", "")})
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("type") == "button":
            found.append({**accessory, "block_id": block.get("block_id", "")})
    return found


def button(message: dict[str, Any], action_prefix: str) -> dict[str, Any]:
    """The first button whose action id starts with ``action_prefix``."""
    for b in buttons(message):
        if str(b.get("action_id", "")).startswith(action_prefix):
            return b
    raise LookupError(f"no button {action_prefix!r} in the message")
