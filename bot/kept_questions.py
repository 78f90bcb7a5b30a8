"""Questions kept after their lookup gave up, tried again in the background.

A follow-up that gives up in a way another try may mend (:data:`GIVE_UPS`: HSS failing or
throttling, or no call slot in time) can be kept: tried again at background priority within
the budget, a bounded number of times (:class:`RetryPlan`), within the 30 minutes a Slack
``response_url`` works. Whoever waits on it is told once, with the fresh answer or the last
error; Retry now tries at once but never faster than asking again would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from bot.errors import BotError, BudgetTimeout, HssThrottledError, HssUnavailableError
from bot.hss.budget import Priority
from bot.lookup import LookupService, Question
from bot.models import Answer, LookupRequest

logger = logging.getLogger(__name__)

#: How a lookup may give up that a later try can mend: HSS failing or throttling, or no call
#: slot in time. Not a refusal, an unknown task or bad credentials: another try would fail
#: the same way (or lock the key).
GIVE_UPS: tuple[type[BaseException], ...] = (
    HssUnavailableError,
    HssThrottledError,
    BudgetTimeout,
    TimeoutError,
)

#: Told once when a kept question ends: the fresh answer, or the last error.
Settle = Callable[[Answer | None, BaseException | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """When a kept question is tried again, at background priority: after each of ``delays``
    seconds in turn, while it is younger than ``lifetime`` (a Slack response_url works for 30
    minutes after the question). ``min_gap``: the least time between two tries when someone
    presses Retry now (None: the budget's own spacing, 12 s at 5 calls a minute)."""

    delays: tuple[float, ...] = (30.0, 60.0, 120.0, 240.0, 480.0)
    lifetime: float = 28 * 60.0
    min_gap: float | None = None

    def delay(self, tries: int, age: float) -> float | None:
        """Seconds to wait before try ``tries + 1`` of a question asked ``age`` s ago; None
        when there is none left."""
        if tries >= len(self.delays) or age + self.delays[tries] >= self.lifetime:
            return None
        return self.delays[tries]

    def tries_left(self, tries: int, age: float) -> int:
        left, waited = 0, age
        for delay in self.delays[tries:]:
            waited += delay
            if waited >= self.lifetime:
                break
            left += 1
        return left


@dataclass(frozen=True, slots=True)
class KeptState:
    """Where a kept question stands: tries left and seconds to the next (None: no more);
    ``now`` is ``trying`` (a try runs), ``joined`` (one was running already), ``too_soon``
    (the last ended ``wait`` s too recently) or ``waiting``."""

    tries_left: int
    next_in: float | None
    now: str = "waiting"
    wait: float = 0.0


@dataclass(eq=False)
class _Kept:
    question: Question
    last_error: BaseException | None = None
    tries: int = 0
    trying: bool = False
    last_try: float = float("-inf")
    settles: dict[Hashable, Settle] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    next_at: float | None = None
    task: asyncio.Task[None] | None = None


class KeptQuestions:
    """Questions whose lookup gave up in a way another try may mend (:data:`GIVE_UPS`), kept
    and tried again in the background within the budget, a bounded number of times
    (:class:`RetryPlan`). One kept question per request: whoever else gives up on the same
    request waits on it too, and each waiter (``key``) is settled once, with the fresh
    answer or the last error. :meth:`retry_now` tries at once at interactive priority, but
    joins a try that is running and never tries sooner than ``min_gap`` after the last, so
    pressing it spends calls no faster than asking again would."""

    def __init__(
        self,
        lookups: LookupService,
        *,
        plan: RetryPlan | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookups = lookups
        self.plan = plan or RetryPlan()
        self._clock = clock
        gap = self.plan.min_gap
        self.min_gap = lookups.call_spacing if gap is None else gap
        self._kept: dict[LookupRequest, _Kept] = {}
        #: When each request was last tried (monotonic), for ``min_gap`` beyond a kept
        #: question's end; entries older than ``min_gap`` are dropped.
        self._tried: dict[LookupRequest, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._kept)

    def keep(
        self, question: Question, error: BaseException, *, key: Hashable, settle: Settle
    ) -> KeptState:
        """Keep ``question`` after ``error``, settling ``key`` through ``settle`` when it ends."""
        kept = self._kept.get(question.peek.answer.request)
        if kept is None:
            kept = self._start(question, error)
        kept.settles[key] = settle
        return self._state(kept)

    def retry_now(self, question: Question, *, key: Hashable, settle: Settle) -> KeptState:
        """Try ``question`` again at once (see the class docstring for when it does not)."""
        kept = self._kept.get(question.peek.answer.request)
        if kept is None:
            kept = self._start(question, None)
        kept.settles[key] = settle
        if kept.trying:
            return self._state(kept, "joined")
        request = question.peek.answer.request
        since = self._clock() - max(kept.last_try, self._tried.get(request, float("-inf")))
        if since < self.min_gap:
            return self._state(kept, "too_soon", self.min_gap - since)
        kept.wake.set()
        return self._state(kept, "trying")

    def holds(self, key: Hashable) -> bool:
        """Whether ``key`` waits on a kept question."""
        return any(key in kept.settles for kept in self._kept.values())

    def forget(self, key: Hashable) -> None:
        """``key`` no longer waits (its message was answered some other way). A kept question
        nobody waits for stops, unless a try is running (its call is paid for)."""
        for kept in list(self._kept.values()):
            kept.settles.pop(key, None)
            if not kept.settles and not kept.trying and kept.task is not None:
                kept.task.cancel()

    async def aclose(self) -> None:
        """Stop every kept question without settling it (shutdown: the caller tells people)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._kept.clear()

    def _start(self, question: Question, error: BaseException | None) -> _Kept:
        kept = _Kept(question=question, last_error=error)
        self._kept[question.peek.answer.request] = kept
        kept.task = task = asyncio.create_task(self._run(kept))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return kept

    def _state(self, kept: _Kept, now: str = "waiting", wait: float = 0.0) -> KeptState:
        age = self._age(kept)
        left = self.plan.tries_left(kept.tries, age)
        next_in = None if kept.next_at is None else max(0.0, kept.next_at - self._clock())
        if kept.next_at is None and left:
            next_in = self.plan.delay(kept.tries, age)
        return KeptState(tries_left=left, next_in=next_in, now=now, wait=wait)

    def _age(self, kept: _Kept) -> float:
        return self._clock() - kept.question.started

    async def _run(self, kept: _Kept) -> None:
        request = kept.question.peek.answer.request
        error: BaseException | None = None
        try:
            answer = await self._tries(kept)
            error = None if answer is not None else kept.last_error
        except Exception as exc:  # a try failed in a way no further try mends
            if not isinstance(exc, BotError):
                logger.exception("a kept question failed")
            answer, error = None, exc
        finally:
            if self._kept.get(request) is kept:
                del self._kept[request]
        await self._settle(kept, answer, error)

    async def _tries(self, kept: _Kept) -> Answer | None:
        while True:
            delay = self.plan.delay(kept.tries, self._age(kept))
            if delay is None and not kept.wake.is_set():
                return None
            pressed = await self._wait(kept, delay)
            if not kept.settles:
                return None  # everyone waiting was answered some other way: spend nothing
            priority = Priority.INTERACTIVE if pressed else Priority.BACKGROUND
            answer = await self._try(kept, priority)
            if answer is not None:
                return answer

    async def _wait(self, kept: _Kept, delay: float | None) -> bool:
        """Wait ``delay`` s or until Retry now; whether Retry now was pressed."""
        if delay is not None and not kept.wake.is_set():
            kept.next_at = self._clock() + delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kept.wake.wait(), delay)
        kept.next_at = None
        pressed = kept.wake.is_set()
        kept.wake.clear()
        return pressed

    async def _try(self, kept: _Kept, priority: Priority) -> Answer | None:
        remaining = max(0.0, self.plan.lifetime - self._age(kept))
        kept.trying = True
        try:
            async with asyncio.timeout(remaining):
                request = kept.question.peek.answer.request
                return await self._lookups.refresh(request, priority=priority)
        except GIVE_UPS as exc:
            kept.last_error = exc
            kept.tries += 1
            return None
        finally:
            kept.trying = False
            kept.last_try = self._clock()
            self._note_try(kept.question.peek.answer.request, kept.last_try)

    def _note_try(self, request: LookupRequest, at: float) -> None:
        self._tried[request] = at
        for old in [r for r, t in self._tried.items() if at - t >= self.min_gap]:
            del self._tried[old]

    async def _settle(
        self, kept: _Kept, answer: Answer | None, error: BaseException | None
    ) -> None:
        if not kept.settles:
            return
        outcome = "refreshed" if answer is not None else _outcome_of(error)
        shown = answer if answer is not None else kept.question.peek.answer
        self._lookups.record(kept.question, shown, outcome, error=error)
        settles, kept.settles = list(kept.settles.values()), {}
        for settle in settles:
            try:
                await settle(answer, error)
            except asyncio.CancelledError:
                raise
            except Exception:  # one waiter's failed post must not cost the others theirs
                logger.exception("could not deliver a kept question's answer")


def _outcome_of(error: BaseException | None) -> str:
    gave_up = error is None or isinstance(error, TimeoutError | BudgetTimeout)
    return "gave_up" if gave_up else "failed"
