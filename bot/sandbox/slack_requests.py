"""Slack's side of the conversation: signed slash-command and button requests.

The demo and the tests send these to the bot's ``/slack/events`` exactly as Slack would,
signed with the signing secret (``v0:{timestamp}:{body}``), so the bot's real request
verification, acks and ``response_url`` replies are exercised.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.alerting.message import ACTION_PATTERN, encode_alert_value
from bot.models import LookupRequest, SyncStatus, TaskRef
from bot.sandbox.slack_standin import TEAM_ID
from bot.slack.action_value import encode_action_value
from bot.slack.home import encode_home_runs_value, encode_home_value
from bot.slack.text import escape

_counter = itertools.count(1)
#: ``#name`` as a word of its own (Slack's channel names: lower case, digits, - and _).
_CHANNEL_NAME = re.compile(r"(?<![\w<|])#([a-z0-9][a-z0-9_-]{0,79})(?![\w-])")


def channel_names(text: str) -> list[str]:
    """The ``#name`` channel names in command text, in order (as Slack would escape them)."""
    return [m[1] for m in _CHANNEL_NAME.finditer(text)]


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
        channels: Mapping[str, str] | None = None,
    ) -> None:
        self._events = bot_url.rstrip("/") + "/slack/events"
        #: Channel names the workspace knows, name -> id: ``#name`` in command text is sent
        #: as ``<#id|name>``, as Slack does for a command that escapes channels.
        self.channels = dict(channels or {})
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
            # Slack encodes & < > in command text before sending it, as escape() does.
            "text": self._channel_refs(escape(text)),
            "response_url": f"{self._response_base}/{ident}",
            "trigger_id": f"trigger.{ident}",
            "api_app_id": "A0HSSSYNC",
        }
        return await self._post(urlencode(form), ident)

    def _channel_refs(self, text: str) -> str:
        def ref(match: re.Match[str]) -> str:
            ident = self.channels.get(match[1])
            return match[0] if ident is None else f"<#{ident}|{match[1]}>"

        return _CHANNEL_NAME.sub(ref, text)

    def _name_of(self, channel: str) -> str:
        return next((name for name, ident in self.channels.items() if ident == channel), "demo")

    async def click(
        self,
        button: dict[str, Any],
        *,
        channel_id: str | None = None,
        message_ts: str | None = None,
    ) -> Reply:
        """Click a button element taken from a message the bot sent: by default an
        ephemeral answer in this user's channel; with ``message_ts``, the message with that
        ts in ``channel_id`` (an alert in a channel, say)."""
        ident = f"act{next(_counter)}"
        channel = channel_id or self.channel_id
        container: dict[str, Any] = {"type": "message", "is_ephemeral": message_ts is None}
        if message_ts is not None:
            container["message_ts"] = message_ts
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM_ID, "domain": "standin"},
            "user": {"id": self.user_id, "username": "demo.user", "team_id": TEAM_ID},
            "api_app_id": "A0HSSSYNC",
            "container": container,
            "channel": {"id": channel, "name": self._name_of(channel)},
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

    async def interaction(self, payload: object) -> Reply:
        """Any interaction payload, signed, as Slack posts one (``payload=<json>``); a dict
        without a ``response_url`` is given one on the stand-in."""
        ident = f"ix{next(_counter)}"
        if isinstance(payload, dict) and "response_url" not in payload:
            payload = {**payload, "response_url": f"{self._response_base}/{ident}"}
        return await self._post(urlencode({"payload": json.dumps(payload)}), ident)

    async def submit_view(
        self,
        callback_id: str,
        values: dict[str, Any],
        *,
        private_metadata: str = "",
        user: object = None,
    ) -> Reply:
        """Submit a modal: ``values`` is the view's ``state.values`` (block id -> action id ->
        element state), as Slack posts them; ``user`` replaces the submitter as sent."""
        ident = f"view{next(_counter)}"
        payload = {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "standin"},
            "user": {"id": self.user_id, "team_id": TEAM_ID} if user is None else user,
            "api_app_id": "A0HSSSYNC",
            "trigger_id": f"trigger.{ident}",
            "view": {
                "id": "V0STANDIN1",
                "type": "modal",
                "callback_id": callback_id,
                "private_metadata": private_metadata,
                "state": {"values": values},
            },
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


def button_labelled(message: dict[str, Any], label: str) -> dict[str, Any]:
    """The button a person means by ``label``: the one whose text is it, else the only one
    whose text starts with it (any case; arrows, emoji and punctuation ignored).

    Raises LookupError saying which buttons there are, or which ones ``label`` fits.
    """
    wanted = _words(label)
    found = buttons(message)
    named = [b for b in found if _words(b["text"]["text"]) == wanted]
    starting = [b for b in found if _words(b["text"]["text"]).startswith(wanted)] if wanted else []
    if named or len(starting) == 1:
        return (named or starting)[0]
    shown = " ".join(f"[{b['text']['text']}]" for b in starting or found)
    if starting:
        raise LookupError(f"{label!r} fits more than one button: {shown}")
    raise LookupError(f"no button {label!r}; there are {shown}" if found else "no buttons")


def _words(text: str) -> str:
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


# --- every listener of an app, driven -----------------------------------------------------------

_GROUP = re.compile(r"\(([^()|]*(?:\|[^()|]*)*)\)")
_PLAIN = re.compile(r"[A-Za-z0-9_-]*")


def ids_matching(matches: str | re.Pattern[str]) -> list[str]:
    """Every id a listener's constraint matches: a plain id, or a pattern that is an anchored
    literal with ``(a|b|...)`` groups (as ``^hss_page_(prev|next)$``). Anything else raises
    ValueError: register plain ids or such alternations, so that every id can be driven."""
    if isinstance(matches, str):
        return [matches]
    source = matches.pattern.removeprefix("^").removesuffix("$")
    parts, last = [[""]], 0
    for group in _GROUP.finditer(source):
        parts += [[source[last : group.start()]], group[1].split("|")]
        last = group.end()
    parts.append([source[last:]])
    if not all(_PLAIN.fullmatch(p) for choices in parts for p in choices):
        raise ValueError(f"cannot list the ids {matches.pattern!r} matches")
    ids = ["".join(pieces) for pieces in itertools.product(*parts)]
    assert all(matches.fullmatch(i) for i in ids), ids
    return ids


@dataclass(frozen=True, slots=True)
class Probe:
    """One request for one listener: a command's text, or a button (action id and value),
    or an event of a type, or a view submission (its callback id)."""

    kind: str  # "command", "action" or "event"
    name: str
    value: str = ""


def probe_values(action_id: str, task_id: str, project_id: str, channel: str) -> list[str]:
    """Button values worth sending to ``action_id``: a lookup's, an alert's, the App Home
    Unwatch buttons' (each listener takes one of them and refuses the others), and junk."""
    request = LookupRequest(task_id, SyncStatus.FAILED)
    values = [encode_action_value(request, 0), encode_action_value(request, 3)]
    if ACTION_PATTERN.fullmatch(action_id):
        values.append(encode_alert_value(action_id, LookupRequest(task_id)))
    values.append(encode_home_value(TaskRef(project_id, task_id), channel))
    values.append(encode_home_runs_value(None, channel))
    return [*values, "junk"]


def probes(
    routes: Iterable[tuple[str, str | re.Pattern[str]]],
    *,
    commands: Sequence[str],
    values: Callable[[str], Sequence[str]],
) -> list[Probe]:
    """A request for every listener in ``routes`` ((kind, what it matches), as Bolt apps
    register them): ``commands`` as the command's texts, ``values(action_id)`` per button."""
    found: list[Probe] = []
    for kind, matches in routes:
        for name in ids_matching(matches):
            if kind == "command":
                found += [Probe("command", text) for text in commands]
            elif kind == "action":
                found += [Probe("action", name, value) for value in values(name)]
            else:
                found.append(Probe(kind, name))
    return found


async def send_probe(user: SlackUser, probe: Probe) -> Reply:
    if probe.kind == "command":
        return await user.command_text(probe.name)
    if probe.kind == "action":
        return await user.click({"action_id": probe.name, "value": probe.value})
    if probe.kind == "view":
        return await user.submit_view(probe.name, {})
    return await user.event({"type": probe.name, "tab": "home"})
