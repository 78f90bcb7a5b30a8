"""The buttons on a channel alert: Acknowledge, Mute 1 h / 24 h, Unmute, Show details,
Show all failed.

Changing buttons check the same permission as the watch commands. Acknowledge and mute
re-render the alert from its stored state and queue an ``update`` through the outbox, so
the message changes in place, in order with everything else the channel is sent. On a run's
message (:mod:`bot.alerting.run_telling`), Mute and Unmute act on the run watch the message
came through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.alerting import outbox
from bot.alerting.message import (
    ACTION_ACK,
    ACTION_ALL,
    ACTION_DETAILS,
    ACTION_UNMUTE,
    AlertAction,
    decode_alert_action,
    render_alert,
)
from bot.alerting.pipeline import scope_of
from bot.alerting.run_state import ack as ack_run
from bot.alerting.run_state import read_view
from bot.alerting.run_telling import Teller
from bot.alerting.state import ack, read_state
from bot.errors import BotError
from bot.lookup import LookupService
from bot.models import TaskRef
from bot.slack.followups import say_error
from bot.slack.render import render_answer
from bot.slack.request_shape import first_action, id_of, user_of
from bot.slack.watch_handlers import WatchCommands
from bot.storage import keys
from bot.storage.run_watch_store import RunWatchStore
from bot.storage.watch_store import WatchStore

logger = logging.getLogger(__name__)


class AlertButtons:
    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        watches: WatchStore,
        lookups: LookupService,
        commands: WatchCommands,
        run_watches: RunWatchStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._watches = watches
        self._run_watches = run_watches
        self._lookups = lookups
        self._commands = commands
        self._clock = clock
        self._runs = Teller(redis, clock=clock)

    async def on_click(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        """The work after a click's ack (Show details and Show all wait for a lookup)."""
        try:
            await self._act(body, respond)
        except BotError as exc:
            await say_error(respond, exc.user_message())

    async def _act(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        action = first_action(body)
        decoded = decode_alert_action(
            str(action.get("action_id", "")), str(action.get("value", ""))
        )
        if decoded.action_id in (ACTION_DETAILS, ACTION_ALL):
            answer = await self._lookups.lookup(decoded.request)
            message = render_answer(answer, now=self._clock())
            await respond(
                text=message.text, blocks=message.blocks, response_type="ephemeral",
                replace_original=False,
            )  # fmt: skip
            return
        user = user_of(body)
        if not await self._commands.allowed(user):
            await say_error(respond, self._commands.refusal())
            return
        channel = id_of(body, "channel")
        ref = self._lookups.ref(decoded.request)
        if await self._run_click(decoded, ref, channel, user):
            return
        if decoded.action_id == ACTION_ACK:
            await ack(self._redis, keys.alert_state(channel, ref), user)
        elif decoded.action_id == ACTION_UNMUTE:
            await self._watches.unmute(task=ref, channel=channel)
        elif decoded.mute_seconds is not None:
            until = self._clock() + decoded.mute_seconds
            await self._watches.mute(task=ref, channel=channel, until=until)
        await self.rerender(ref, channel, reason=decoded.action_id)

    async def _run_click(self, decoded: AlertAction, ref: TaskRef, channel: str, user: str) -> bool:
        """A click on a run's message: acknowledge it, or mute or unmute the run watch it
        came through, and show that on it. False when the channel has no such message."""
        key = keys.run_alert(channel, ref)
        found = await read_view(self._redis, key)
        if found is None or self._run_watches is None:
            return False
        kind = found[0].kind
        if decoded.action_id == ACTION_ACK:
            await ack_run(self._redis, key, user)
        elif decoded.action_id == ACTION_UNMUTE:
            await self._run_watches.unmute(channel=channel, kind=kind)
        elif decoded.mute_seconds is not None:
            until = self._clock() + decoded.mute_seconds
            await self._run_watches.mute(channel=channel, kind=kind, until=until)
        watch = await self._run_watches.get(channel=channel, kind=kind)
        muted_until = watch.muted_until if watch is not None else None
        await self._runs.rerender(channel, ref, muted_until=muted_until, reason=decoded.action_id)
        return True

    async def rerender(self, ref: TaskRef, channel: str, *, reason: str) -> None:
        """Queue an update of the alert message from its stored state."""
        watch = await self._watches.get(task=ref, channel=channel)
        key = keys.alert_state(channel, ref)
        state = await read_state(self._redis, key)
        if watch is None or state.incident is None:
            return
        now = self._clock()
        message = render_alert(
            scope_of(watch),
            state.incident,
            now=now,
            acked_by=state.acked_by,
            muted_until=watch.muted_until,
        )
        await outbox.enqueue(
            self._redis,
            channel=channel,
            kind="update",
            alert_key=key,
            text=message.text,
            blocks=message.blocks,
            dedup=f"{key}:{reason}:{now!r}",
        )
