"""The lookup in Slack: the slash command and the buttons on an answer (pages, Refresh,
Share to channel, Retry now).

Every command is acked at once. If the mirror holds fresh data the answer rides in the ack;
otherwise the ack shows what is known (with its age) and says that fresh data is coming, and
the fresh answer replaces it through ``response_url`` (:mod:`bot.slack.followups`). Anything
that may wait (HSS, the call budget, Redis, Slack) runs after the ack: a command's first
answer rides in the ack only if it is ready within :data:`ACK_WITHIN` seconds. Paging never
calls HSS; Refresh calls at most once however many people click, and a view that takes
several calls is refreshed at most once a minute, after saying what it costs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.errors import BotError, CommandError
from bot.hss.budget import Priority
from bot.lookup import MIN_REFRESH_AGE, LookupService, Peek, Question, RefreshCost
from bot.mirror import Snapshot
from bot.models import LookupRequest
from bot.runs_service import RunsService, named_run
from bot.slack.action_value import decode_action_value
from bot.slack.background import Background
from bot.slack.command import Help, Lookup, parse
from bot.slack.followups import FAILED, FollowUps, Waiting, clock_time, payload, say_error
from bot.slack.render import Message, Offer, render_answer, render_error, render_help
from bot.slack.request_shape import first_action, user_of
from bot.slack.run_text import Resolved
from bot.slack.tasks_command import ListTasks
from bot.slack.tasks_handlers import Reply, TasksHandlers
from bot.slack.text import USER_ID, data_age
from bot.slack.watch_handlers import WatchCommands

logger = logging.getLogger(__name__)

#: Above this wait the first reply says when fresh data will come instead of "fetching".
SAY_WAIT_AFTER = 2.0
#: A fresh answer that needs longer than this is given up: response_url lives 30 minutes.
MAX_WAIT = 25 * 60.0
#: A command's first answer rides in its ack if ready this soon (Slack waits 3 s, network
#: included); otherwise the ack says it is coming and the answer follows through response_url.
ACK_WITHIN = 2.0
#: A view that takes more than one call to refresh is refreshed at most this often.
BIG_REFRESH_AGE = 60.0

WATCHES_NOT_YET = (
    "Channel watches (watch, unwatch, watches, mute, unmute) are not available in this "
    "version yet. Lookups work: /hss-sync <task_id> [failed|running|finished]."
)
WORKING = "Working on it: the answer replaces this message in a moment."
RUNS_NOT_SET_UP = "The list of sync runs is not set up in this deployment; task ids work."
_CACHED_MESSAGES = 256


def budget_notice(wait: float, now: float) -> str:
    at = clock_time(now + wait)
    return f"The HSS call budget is spent: fresh data at about {at} (in {wait:.0f} s)."


class FirstReply:
    """A slash command's first answer: in the ack when it is ready in time, otherwise through
    response_url, replacing the placeholder the ack carried."""

    def __init__(self, ack: AsyncAck, respond: AsyncRespond) -> None:
        self._ack = ack
        self._respond = respond
        self._acked = asyncio.Event()
        self._lock = asyncio.Lock()

    async def __call__(self, message: Message) -> None:
        async with self._lock:
            if not self._acked.is_set():
                await self._ack(**payload(message, response_type="ephemeral"))
                self._acked.set()
                return
        await self._respond(**payload(message, response_type="ephemeral", replace_original=True))

    async def within(self, work: asyncio.Task[None], seconds: float) -> None:
        """Return once the answer is in the ack; at the deadline, or if ``work`` ended
        without answering, ack a placeholder instead."""
        acked = asyncio.ensure_future(self._acked.wait())
        try:
            await asyncio.wait({acked, work}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            acked.cancel()
        async with self._lock:
            if not self._acked.is_set():
                said = render_error(FAILED) if work.done() else render_error(WORKING)
                await self._ack(**payload(said, response_type="ephemeral"))
                self._acked.set()


class LookupHandlers:
    """The listeners, as methods so tests and the demo can reach the same logic. Button
    methods are the work after the ack (see :meth:`Background.clicks`)."""

    def __init__(
        self,
        *,
        lookups: LookupService,
        followups: FollowUps,
        background: Background,
        clock: Callable[[], float] = time.time,
        watch_commands: WatchCommands | None = None,
        runs: RunsService | None = None,
    ) -> None:
        self._lookups = lookups
        self._runs = runs
        self._tasks = (
            None
            if runs is None
            else TasksHandlers(runs=runs, fresh_seconds=lookups.fresh_seconds, clock=clock)
        )
        self._followups = followups
        self._background = background
        self._watch_commands = watch_commands
        self._clock = clock
        self._messages: OrderedDict[tuple[LookupRequest, str], tuple[Snapshot, Message]] = (
            OrderedDict()
        )

    async def on_command(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond
    ) -> None:
        reply = FirstReply(ack, respond)
        work = self._background.spawn(self._command(command, reply, respond))
        await reply.within(work, ACK_WITHIN)

    async def _command(
        self, command: dict[str, Any], reply: FirstReply, respond: AsyncRespond
    ) -> None:
        try:
            parsed = parse(str(command.get("text", "")))
        except CommandError as exc:
            await reply(render_error(exc.user_message()))
            return
        if isinstance(parsed, Help):
            await reply(render_help(str(command.get("command") or "/hss-sync")))
        elif isinstance(parsed, Lookup):
            await self._answer(reply, respond, parsed.request, user_of(command))
        elif isinstance(parsed, ListTasks):
            if self._tasks is None:
                await reply(render_error(RUNS_NOT_SET_UP))
            else:
                await self._tasks.answer(parsed, reply, respond)
        elif self._watch_commands is None:
            # Parsed already, but channel watches are not switched on in this deployment.
            await reply(render_error(WATCHES_NOT_YET))
        else:
            await self._watch_commands.handle(parsed, command, reply)

    async def _answer(
        self, reply: Reply, respond: AsyncRespond, request: LookupRequest, user: str
    ) -> None:
        try:
            request, resolved = await self._resolved(request)
        except BotError as exc:
            await reply(render_error(exc.user_message()))
            return
        question = await self._lookups.ask(request)
        peek, now = question.peek, self._clock()
        if peek.fresh:
            await reply(self._rendered(peek, now, resolved))
            return
        notice = await self._pending_notice(request, now)
        await reply(render_answer(peek.answer, now=now, notice=notice, resolved=resolved))
        # Someone with no answer at all needs a call more than someone looking at older data.
        priority = Priority.BACKGROUND if peek.answer.has_data else Priority.INTERACTIVE
        waiting = Waiting(respond=respond, stale=peek.answer, page=0, user=user, resolved=resolved)
        await self._followups.deliver(question, waiting, priority=priority)

    async def _resolved(self, request: LookupRequest) -> tuple[LookupRequest, Resolved | None]:
        """The request for the run a task reference names (and which), or as asked."""
        run = await named_run(self._runs, request.task_id)
        if run is None:
            return request, None
        return replace(request, task_id=run.task_id), Resolved(request.task_id, run)

    def _rendered(self, peek: Peek, now: float, resolved: Resolved | None = None) -> Message:
        """The first page of a fresh answer. A burst of the same question renders once: the
        text only changes with the data or its age as shown ("42 s ago")."""
        if resolved is not None:  # names the run: not shared with those who gave its id
            return render_answer(peek.answer, now=now, resolved=resolved)
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

    # --- buttons: the work after the ack ---

    @property
    def tasks(self) -> TasksHandlers | None:
        """The ``tasks`` list's handlers (its paging buttons), when the run list is set up."""
        return self._tasks

    async def on_show_failed(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        """A run's "Show failed" on a ``tasks`` list: the lookup of its failed registries,
        replacing the list (its own follow-up replaces it again with fresh data)."""
        try:
            request, _ = decode_action_value(str(first_action(body).get("value", "")))
        except CommandError as exc:
            await say_error(respond, exc.user_message())
            return

        async def reply(message: Message) -> None:
            await _replace(respond, message)

        await self._answer(reply, respond, request, user_of(body))

    async def on_page(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        clicked = await self._clicked(body, respond)
        if clicked is None:
            return
        _, page, peek = clicked
        await _replace(respond, render_answer(peek.answer, page=page, now=self._clock()))

    async def on_share(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        clicked = await self._clicked(body, respond)
        if clicked is None:
            return
        _, page, peek = clicked
        user = user_of(body)
        message = render_answer(
            peek.answer,
            page=page,
            now=self._clock(),
            shareable=False,
            shared_by=user if USER_ID.fullmatch(user) else None,
        )
        await respond(**payload(message, response_type="in_channel", replace_original=False))

    async def on_refresh(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        await self._refresh(body, respond, confirmed=False)

    async def on_refresh_confirmed(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        await self._refresh(body, respond, confirmed=True)

    async def _refresh(
        self, body: dict[str, Any], respond: AsyncRespond, *, confirmed: bool
    ) -> None:
        started = time.monotonic()
        clicked = await self._clicked(body, respond)
        if clicked is None:
            return
        request, page, peek = clicked
        cost = await self._lookups.refresh_cost(request)
        if cost.calls > 1:
            if not await self._big_refresh(respond, peek, page, cost, confirmed=confirmed):
                return
        else:
            wait = await self._lookups.wait_estimate(request)
            if wait > SAY_WAIT_AFTER:
                notice = budget_notice(wait, self._clock())
                message = render_answer(peek.answer, page=page, now=self._clock(), notice=notice)
                await _replace(respond, message)
        # Data younger than this is what a refresh would fetch anyway: clicks cost nothing.
        max_age = min(MIN_REFRESH_AGE, self._lookups.fresh_seconds)
        # A click always asks for newer data, whatever the peek said.
        question = Question(peek=peek, started=started)
        waiting = Waiting(respond=respond, stale=peek.answer, page=page, user=user_of(body))
        await self._followups.deliver(question, waiting, max_age=max_age, clicked=True)

    async def _big_refresh(
        self, respond: AsyncRespond, peek: Peek, page: int, cost: RefreshCost, *, confirmed: bool
    ) -> bool:
        """A view of several calls: refused while younger than a minute; else its cost said
        first, and spent once confirmed. Whether to go on and refresh."""
        now = self._clock()
        offer = None
        if cost.age is not None and cost.age < BIG_REFRESH_AGE:
            notice, go = _too_young(cost), False
        elif not confirmed:
            notice, offer, go = _cost_notice(cost), Offer(confirm_calls=cost.calls), False
        else:
            when = f"{clock_time(now + cost.wait)} (in {cost.wait:.0f} s)"
            notice, go = f"Refreshing: {cost.calls} HSS calls, fresh data at about {when}.", True
        message = render_answer(peek.answer, page=page, now=now, notice=notice, offer=offer)
        await _replace(respond, message)
        return go

    async def on_retry(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        clicked = await self._clicked(body, respond)
        if clicked is None:
            return
        _, page, peek = clicked
        question = Question(peek=peek, started=time.monotonic())
        waiting = Waiting(respond=respond, stale=peek.answer, page=page, user=user_of(body))
        await self._followups.retry_now(question, waiting)

    async def _clicked(
        self, body: dict[str, Any], respond: AsyncRespond
    ) -> tuple[LookupRequest, int, Peek] | None:
        """Decode a button's value and read the mirror (no call); None if the value is junk.
        A task reference in it (``latest``) is resolved first: the newest run now."""
        try:
            request, page = decode_action_value(str(first_action(body).get("value", "")))
            request, _ = await self._resolved(request)
        except BotError as exc:
            await say_error(respond, exc.user_message())
            return None
        return request, page, await self._lookups.peek(request)


def _too_young(cost: RefreshCost) -> str:
    age = cost.age or 0.0
    return (
        f"This view was fetched {age:.0f} s ago and takes {cost.calls} HSS calls to refresh, "
        f"so Refresh works again when it is a minute old (in {BIG_REFRESH_AGE - age:.0f} s)."
    )


def _cost_notice(cost: RefreshCost) -> str:
    return (
        f"Refreshing this view takes {cost.calls} HSS calls, of a budget of {cost.limit.calls} "
        f"a window shared by everyone: fresh data in about {cost.wait:.0f} s. "
        f"Press Refresh ({cost.calls} calls) to go ahead."
    )


async def _replace(respond: AsyncRespond, message: Message) -> None:
    await respond(**payload(message, response_type="ephemeral", replace_original=True))
