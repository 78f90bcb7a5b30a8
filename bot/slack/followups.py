"""Messages that promise fresh data, and keeping the promise.

An answer that is not fresh is acknowledged with what the mirror knows ("Fetching fresh data
from HSS…") and replaced through ``response_url`` when the fresh answer comes. Every such
message is a :class:`Waiting` until it is replaced:

- the fresh answer, or the error shown over the older data, replaces it;
- a give-up another try may mend (HSS not answering properly, the budget busy) keeps the
  question (:class:`bot.kept_questions.KeptQuestions`): the message says so and offers Retry now,
  and is replaced when a background try brings the answer, or the tries run out;
- on shutdown, every message still waiting is told that the bot is restarting, and so is
  every one asked after that (HTTP mode serves until its listener closes), so nobody looks
  at "Fetching…" for ever.

A response_url takes 5 posts within 30 minutes: a kept question uses at most three (the
give-up, a Retry now notice, the answer), and every try ends within 28 minutes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.errors import BotError
from bot.hss.budget import Priority
from bot.kept_questions import GIVE_UPS, KeptQuestions, KeptState, Settle
from bot.lookup import LookupService, Question
from bot.models import Answer
from bot.slack.render import Message, Offer, render_answer, render_error
from bot.slack.run_text import Resolved

logger = logging.getLogger(__name__)

GAVE_UP = "Fresh data did not come within 25 minutes: the HSS call budget is busy."
#: Said when answering failed in a way the bot cannot explain (a bug, Redis refusing a write).
FAILED = "Something went wrong answering this; it is logged. Try again in a minute."
RESTARTING = (
    "The bot is restarting, so the fresh data this message was waiting for will not come. "
    "Ask again in a minute."
)


def payload(message: Message, **extra: Any) -> dict[str, Any]:
    return {"text": message.text, "blocks": message.blocks, **extra}


async def say_error(respond: AsyncRespond, text: str) -> None:
    """An error only the clicker sees, leaving the message they clicked on as it was."""
    await respond(**payload(render_error(text), response_type="ephemeral", replace_original=False))


def clock_time(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


@dataclass(eq=False)
class Waiting:
    """A message promising fresh data: where to post its replacement, and what it shows.
    Posts to it go one at a time, and none after the one that ends the wait (``done``): a
    notice such as "Trying again now" must never replace the answer."""

    respond: AsyncRespond
    stale: Answer
    page: int
    user: str
    #: The task reference the question was asked with (``latest``), named on every answer.
    resolved: Resolved | None = None
    done: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FollowUps:
    def __init__(
        self,
        *,
        lookups: LookupService,
        kept: KeptQuestions,
        max_wait: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lookups = lookups
        self.kept = kept
        self._max_wait = max_wait
        self._clock = clock
        self._waiting: set[Waiting] = set()
        #: Set once people are told that the bot restarts: a question asked after that
        #: (HTTP mode serves until its listener closes) is told so at once.
        self._restarting = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def deliver(
        self,
        question: Question,
        waiting: Waiting,
        *,
        priority: Priority = Priority.INTERACTIVE,
        max_age: float | None = None,
        clicked: bool = False,
    ) -> None:
        """Follow ``question`` up, then replace ``waiting``'s message (see the module doc).
        ``clicked``: a button on a message that may be waiting already (a kept question's):
        this answer ends that wait too."""
        if clicked:
            waiting = self._adopt(waiting, kept_only=True)
        self._waiting.add(waiting)
        if self._restarting:  # a fetch now would be cut short by the shutdown
            await self._finish(waiting, self._restart_notice(waiting))
            return
        try:
            answer = await self._lookups.follow_up(
                question, priority=priority, max_age=max_age, max_wait=self._max_wait
            )
        except GIVE_UPS as exc:
            await self._keep(question, waiting, exc)
            return
        except BotError as exc:
            await self._finish(waiting, self._over_stale(waiting, exc.user_message()))
            return
        except Exception:
            # Logged here, once; the message must not promise fresh data for ever.
            logger.exception("a lookup failed after its acknowledgement")
            await self._finish(waiting, self._over_stale(waiting, FAILED))
            return
        await self._finish(waiting, self._render(waiting, answer))

    async def retry_now(self, question: Question, waiting: Waiting) -> None:
        """Retry now on ``waiting``'s message: try at once (or join the try running), and say
        so; the answer replaces the message when it comes."""
        adopted = self._adopt(waiting)
        if self._restarting:
            await self._finish(adopted, self._restart_notice(adopted))
            return
        state = self.kept.retry_now(question, key=adopted, settle=self._settler(adopted))
        message = self._over_stale(adopted, _retry_notice(state, self._clock()), retry=True)
        # Through this click's own response_url: each click's has its 5 posts.
        await self._post(adopted, message, final=False, respond=waiting.respond)

    async def tell_restarting(self, timeout: float) -> int:
        """Shutdown: replace every waiting message with :data:`RESTARTING`, within ``timeout``
        s in all; the number of messages told. Questions asked later are told at once."""
        self._restarting = True
        waiting, self._waiting = list(self._waiting), set()
        if not waiting:
            return 0
        posts = [asyncio.ensure_future(self._post_restarting(w)) for w in waiting]
        done, late = await asyncio.wait(posts, timeout=max(0.0, timeout))
        for post in late:
            post.cancel()
        told = sum(1 for p in done if not p.cancelled() and p.exception() is None)
        logger.info("told %d of %d waiting people that the bot is restarting", told, len(waiting))
        return told

    # --- internals ---

    def _adopt(self, clicked: Waiting, *, kept_only: bool = False) -> Waiting:
        """The waiting message a click is on: the same person's for the same request (with
        ``kept_only``, one whose question is kept), now answered through the click's
        response_url (fresh: 5 more posts); else the click's own."""
        request = clicked.stale.request
        for waiting in self._waiting:
            same = waiting.user == clicked.user and waiting.stale.request == request
            if same and (not kept_only or self.kept.holds(waiting)):
                waiting.respond, waiting.page = clicked.respond, clicked.page
                return waiting
        self._waiting.add(clicked)
        return clicked

    async def _keep(self, question: Question, waiting: Waiting, error: BaseException) -> None:
        state = self.kept.keep(question, error, key=waiting, settle=self._settler(waiting))
        why = _why(error)
        notice = f"{why} {_kept_notice(state, self._clock())}"
        await self._post(waiting, self._over_stale(waiting, notice, retry=True), final=False)

    def _settler(self, waiting: Waiting) -> Settle:
        async def settle(answer: Answer | None, error: BaseException | None) -> None:
            if answer is not None:
                message = self._render(waiting, answer)
            else:
                message = self._over_stale(waiting, _final_notice(error), retry=True)
            await self._finish(waiting, message)

        return settle

    def _render(self, waiting: Waiting, answer: Answer, **extra: Any) -> Message:
        return render_answer(
            answer, page=waiting.page, now=self._clock(), resolved=waiting.resolved, **extra
        )

    def _over_stale(self, waiting: Waiting, notice: str, *, retry: bool = False) -> Message:
        return self._render(waiting, waiting.stale, notice=notice, offer=Offer(retry=retry))

    async def _finish(self, waiting: Waiting, message: Message) -> None:
        self.kept.forget(waiting)
        try:
            await self._post(waiting, message, final=True)
        finally:
            if waiting.done:  # not when a shutdown cut the post short: it tells the message
                self._waiting.discard(waiting)

    async def _post_restarting(self, waiting: Waiting) -> None:
        self.kept.forget(waiting)
        await self._post(waiting, self._restart_notice(waiting), final=True)

    def _restart_notice(self, waiting: Waiting) -> Message:
        return self._render(waiting, waiting.stale, notice=RESTARTING)

    @staticmethod
    async def _post(
        waiting: Waiting, message: Message, *, final: bool, respond: AsyncRespond | None = None
    ) -> None:
        async with waiting.lock:
            if waiting.done:
                return  # answered already, or told that the bot restarts
            try:
                await (respond or waiting.respond)(
                    **payload(message, response_type="ephemeral", replace_original=True)
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                waiting.done = waiting.done or final  # Slack refused it: no second try
                raise
            waiting.done = waiting.done or final


def _why(error: BaseException) -> str:
    if isinstance(error, BotError):
        return error.user_message()
    return GAVE_UP  # the lookup's own deadline (response_url lives 30 minutes)


def _kept_notice(state: KeptState, now: float) -> str:
    if state.tries_left == 0 or state.next_in is None:
        return "Press Retry now to try again."
    times = "once more" if state.tries_left == 1 else f"up to {state.tries_left} more times"
    return (
        f"I kept the question and will try {times} in the background (next at about "
        f"{clock_time(now + state.next_in)}); this message is replaced when the answer comes. "
        "Retry now tries at once."
    )


def _retry_notice(state: KeptState, now: float) -> str:
    if state.now == "joined":
        return "Already trying again: this message is replaced when the answer comes."
    if state.now == "too_soon":
        return (
            f"Tried moments ago: Retry now works again in {state.wait:.0f} s (the HSS budget "
            "allows only a few calls a minute). This message is replaced when the answer comes."
        )
    return "Trying again now: this message is replaced when the answer comes."


def _final_notice(error: BaseException | None) -> str:
    why = _why(error) if error is not None else GAVE_UP
    return f"{why} No further tries in the background: this is the newest data there is."
