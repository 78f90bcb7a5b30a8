"""The Bolt app: the slash command and its buttons.

Every command is acked at once. If the mirror holds fresh data the answer rides in the ack;
otherwise the ack shows what is known (with its age) and says that fresh data is coming, and
the fresh answer replaces it through ``response_url``. Paging never calls HSS; Refresh calls
at most once however many people click.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerting.message import ACTION_PATTERN as ALERT_ACTIONS
from bot.errors import BotError, CommandError
from bot.hss.budget import Priority, asker
from bot.lookup import MIN_REFRESH_AGE, LookupService, Peek, Question
from bot.mirror import Snapshot
from bot.models import LookupRequest
from bot.ops import logs, metrics
from bot.slack.action_value import decode_action_value
from bot.slack.alert_buttons import AlertButtons
from bot.slack.command import Help, Lookup, parse
from bot.slack.home import ACTION_HOME_UNWATCH
from bot.slack.render import (
    ACTION_PAGE_PATTERN,
    ACTION_REFRESH,
    ACTION_SHARE,
    Message,
    render_answer,
    render_error,
    render_help,
)
from bot.slack.text import USER_ID, data_age
from bot.slack.watch_handlers import WatchCommands

logger = logging.getLogger(__name__)

#: Above this wait the first reply says when fresh data will come instead of "fetching".
SAY_WAIT_AFTER = 2.0
#: A fresh answer that needs longer than this is given up: response_url lives 30 minutes.
MAX_WAIT = 25 * 60.0

GAVE_UP = (
    "Fresh data did not come within 25 minutes: the HSS call budget is busy. "
    "This is the newest data there is; press Refresh later."
)

WATCHES_NOT_YET = (
    "Channel watches (watch, unwatch, watches, mute, unmute) are not available in this "
    "version yet. Lookups work: /hss-sync <task_id> [failed|running|finished]."
)
_CACHED_MESSAGES = 256


def _payload(message: Message, **extra: Any) -> dict[str, Any]:
    return {"text": message.text, "blocks": message.blocks, **extra}


def budget_notice(wait: float, now: float) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(now + wait))
    return f"The HSS call budget is spent: fresh data at about {at} (in {wait:.0f} s)."


class SlackHandlers:
    """The listeners, as methods so tests and the demo can reach the same logic."""

    def __init__(
        self,
        *,
        lookups: LookupService,
        clock: Callable[[], float] = time.time,
        max_wait: float = MAX_WAIT,
        watch_commands: WatchCommands | None = None,
    ) -> None:
        self._lookups = lookups
        self._watch_commands = watch_commands
        self._clock = clock
        self._max_wait = max_wait
        self._tasks: set[asyncio.Task[None]] = set()
        self._messages: OrderedDict[tuple[LookupRequest, str], tuple[Snapshot, Message]] = (
            OrderedDict()
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run follow-up work after the listener returns (and Bolt sends the ack)."""
        task = asyncio.create_task(_logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Shutdown: stop follow-ups still waiting (their response_url replies are lost)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def on_command(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond
    ) -> None:
        try:
            parsed = parse(str(command.get("text", "")))
        except CommandError as exc:
            await ack(**_payload(render_error(exc.user_message()), response_type="ephemeral"))
            return
        if isinstance(parsed, Help):
            await ack(**_payload(render_help(str(command.get("command") or "/hss-sync"))))
            return
        if isinstance(parsed, Lookup):
            await self._answer(ack, respond, parsed.request)
            return
        if self._watch_commands is None:
            # Parsed already, but channel watches are not switched on in this deployment.
            await ack(**_payload(render_error(WATCHES_NOT_YET), response_type="ephemeral"))
            return

        async def reply(message: Message) -> None:
            await ack(**_payload(message, response_type="ephemeral"))

        await self._watch_commands.handle(parsed, command, reply)

    async def _answer(self, ack: AsyncAck, respond: AsyncRespond, request: LookupRequest) -> None:
        question = await self._lookups.ask(request)
        peek, now = question.peek, self._clock()
        if peek.fresh:
            await ack(**_payload(self._rendered(peek, now), response_type="ephemeral"))
            return
        notice = await self._pending_notice(request, now)
        await ack(
            **_payload(
                render_answer(peek.answer, now=now, notice=notice), response_type="ephemeral"
            )
        )
        # Someone with no answer at all needs a call more than someone looking at older data.
        priority = Priority.BACKGROUND if peek.answer.has_data else Priority.INTERACTIVE
        self._spawn(self._deliver(respond, question, page=0, priority=priority))

    def _rendered(self, peek: Peek, now: float) -> Message:
        """The first page of a fresh answer. A burst of the same question renders once: the
        text only changes with the data or its age as shown ("42 s ago")."""
        key = (peek.answer.request, data_age(peek.answer.fetched_at, now))
        cached = self._messages.get(key)
        if cached is not None and cached[0] is peek.source:
            return cached[1]
        message = render_answer(peek.answer, now=now)
        self._messages[key] = (peek.source, message)
        while len(self._messages) > _CACHED_MESSAGES:
            self._messages.popitem(last=False)
        return message

    async def _pending_notice(self, request: LookupRequest, now: float) -> str:
        wait = await self._lookups.wait_estimate(request)
        if wait > SAY_WAIT_AFTER:
            return budget_notice(wait, now)
        return "Fetching fresh data from HSS…"

    async def _deliver(
        self,
        respond: AsyncRespond,
        question: Question,
        *,
        page: int,
        max_age: float | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> None:
        """Follow ``question`` up, then replace the pending message with the fresh answer or
        the error shown over the older data."""
        stale = question.peek.answer
        try:
            answer = await self._lookups.follow_up(
                question, priority=priority, max_age=max_age, max_wait=self._max_wait
            )
            message = render_answer(answer, page=page, now=self._clock())
        except BotError as exc:
            message = render_answer(stale, page=page, now=self._clock(), notice=exc.user_message())
        except TimeoutError:
            # response_url expires after 30 minutes: say so rather than go silent.
            message = render_answer(stale, page=page, now=self._clock(), notice=GAVE_UP)
        await respond(**_payload(message, response_type="ephemeral", replace_original=True))

    # --- buttons ---

    async def on_page(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        self._spawn(self._show_page(body, respond))

    async def on_refresh(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        self._spawn(self._refresh(body, respond))

    async def on_share(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        self._spawn(self._share(body, respond))

    async def _show_page(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        clicked = await self._clicked(body, respond)
        if clicked is None:
            return
        _, page, peek = clicked
        message = render_answer(peek.answer, page=page, now=self._clock())
        await respond(**_payload(message, response_type="ephemeral", replace_original=True))

    async def _refresh(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        started = time.monotonic()
        clicked = await self._clicked(body, respond)
        if clicked is None:
            return
        request, page, peek = clicked
        wait = await self._lookups.wait_estimate(request)
        if wait > SAY_WAIT_AFTER:
            notice = budget_notice(wait, self._clock())
            message = render_answer(peek.answer, page=page, now=self._clock(), notice=notice)
            await respond(**_payload(message, response_type="ephemeral", replace_original=True))
        # Data younger than this is what a refresh would fetch anyway: clicks cost nothing.
        max_age = min(MIN_REFRESH_AGE, self._lookups.fresh_seconds)
        # A click always asks for newer data, whatever the peek said.
        question = Question(peek=peek, started=started)
        await self._deliver(respond, question, page=page, max_age=max_age)

    async def _share(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        clicked = await self._clicked(body, respond)
        if clicked is None:
            return
        _, page, peek = clicked
        user = str(body.get("user", {}).get("id", ""))
        message = render_answer(
            peek.answer,
            page=page,
            now=self._clock(),
            shareable=False,
            shared_by=user if USER_ID.fullmatch(user) else None,
        )
        await respond(**_payload(message, response_type="in_channel", replace_original=False))

    async def _clicked(
        self, body: dict[str, Any], respond: AsyncRespond
    ) -> tuple[LookupRequest, int, Peek] | None:
        """Decode a button's value and read the mirror (no call); None if the value is junk."""
        decoded = await self._decode(body, respond)
        if decoded is None:
            return None
        request, page = decoded
        return request, page, await self._lookups.peek(request)

    async def _decode(
        self, body: dict[str, Any], respond: AsyncRespond
    ) -> tuple[LookupRequest, int] | None:
        try:
            actions = body.get("actions") or [{}]
            return decode_action_value(str(actions[0].get("value", "")))
        except CommandError as exc:
            message = render_error(exc.user_message())
            await respond(**_payload(message, response_type="ephemeral", replace_original=False))
            return None


class ObservedApp(AsyncApp):
    """Bolt's app, with every request given a request id and its ack timed. HTTP and Socket
    Mode both dispatch through here; with ``process_before_response`` the listener has
    returned (and so called ``ack``) when dispatch does."""

    async def async_dispatch(self, req: AsyncBoltRequest) -> BoltResponse:
        kind, details = describe_request(req.body)
        asker.set(details.get("user") or None)  # whose turn a call of this request takes
        started = time.perf_counter()
        # Tasks the listener spawns copy this context: their lines carry the same id.
        with logs.request_scope(logs.new_request_id()):
            try:
                return await super().async_dispatch(req)
            finally:
                seconds = time.perf_counter() - started
                metrics.ACK_SECONDS.labels(kind).observe(seconds)
                logger.debug(
                    "slack %s acked in %.0f ms",
                    kind,
                    seconds * 1000,
                    extra={"event": "ack", "kind": kind, "ms": round(seconds * 1000, 1), **details},
                )


def describe_request(body: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The ack histogram's ``kind`` (one of ``metrics.ACK_KINDS``) and a few fields that say
    what the request was, for its debug line."""
    if "command" in body:
        fields = {"command": str(body["command"]), "text": str(body.get("text", ""))[:120]}
        return "command", {**fields, "user": str(body.get("user_id", ""))}
    if body.get("type") == "block_actions":
        action = (body.get("actions") or [{}])[0]
        user = str((body.get("user") or {}).get("id", ""))
        return "action", {"action_id": str(action.get("action_id", "")), "user": user}
    if body.get("type") == "event_callback":
        return "event", {"event_type": str((body.get("event") or {}).get("type", ""))}
    return "other", {}


@dataclass(frozen=True)
class SlackBot:
    app: AsyncApp
    handlers: SlackHandlers

    async def aclose(self) -> None:
        await self.handlers.aclose()


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:  # a follow-up has no Bolt error handler above it: log it once
        logger.exception("unhandled error after acknowledging a Slack request")


async def _on_error(error: Exception, body: dict[str, Any]) -> None:
    # Listeners render BotErrors themselves; anything reaching here is a bug: log it once.
    logger.error("unhandled error in a Slack listener", exc_info=error)


def build_app(
    *,
    lookups: LookupService,
    web_client: AsyncWebClient,
    signing_secret: str | None,
    command_name: str,
    clock: Callable[[], float] = time.time,
    max_wait: float = MAX_WAIT,
    watch_commands: WatchCommands | None = None,
    alert_buttons: AlertButtons | None = None,
) -> SlackBot:
    """The Bolt app. ``signing_secret`` is None in Socket Mode (no HTTP requests to verify)."""
    app = ObservedApp(
        client=web_client,
        signing_secret=signing_secret,
        request_verification_enabled=signing_secret is not None,
        # The ack is sent when a listener returns; follow-up work runs in tasks we own
        # (SlackHandlers._spawn), so no listener waits on Bolt's 10 ms ack polling.
        process_before_response=True,
        raise_error_for_unhandled_request=False,
    )
    handlers = SlackHandlers(
        lookups=lookups, clock=clock, max_wait=max_wait, watch_commands=watch_commands
    )
    app.command(command_name)(handlers.on_command)
    app.action(ACTION_PAGE_PATTERN)(handlers.on_page)
    app.action(ACTION_REFRESH)(handlers.on_refresh)
    app.action(ACTION_SHARE)(handlers.on_share)
    if alert_buttons is not None:
        app.action(ALERT_ACTIONS)(alert_buttons.on_action)
    if watch_commands is not None:
        app.event("app_home_opened")(watch_commands.on_home_opened)
        app.action(ACTION_HOME_UNWATCH)(watch_commands.on_home_unwatch)
    app.error(_on_error)
    return SlackBot(app=app, handlers=handlers)
