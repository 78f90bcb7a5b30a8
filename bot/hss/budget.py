"""The HSS call budget: at most ``limit.calls`` call starts in any ``limit.window`` seconds.

HSS allows one IAM user 5 calls a minute per API, shared by every slash command, CLI run and
replica, so the budget lives in Redis (one Lua script, on Redis's clock) and every process
with the same Redis and AK draws from it. Each API has a budget of its own (``api``: its own
Redis keys and limit); the rules below hold within each.

Rules shared by both implementations:

- Interactive first: an interactive caller that has to wait registers as a waiter; a
  background acquire is refused while any live waiter exists and while starting would leave
  fewer than ``reserve`` (default 1) slots free, so a person never queues behind the refresher.
- A 429 from HSS (``penalize``) fills the window with phantom starts: nothing starts until
  ``retry_after`` (or, without one, a whole window) has passed.
- Interactive callers take turns by asker (``asker``: the person behind the call), round
  robin across processes: a new question joins the round being served, after its asker's
  questions already waiting; the next call of a question just served (a fetch's next page,
  a retry) waits for the round after. Within a round, first come, first served: a caller
  starts only while fewer live waiters are ahead of it than slots are free (two free slots:
  the first two may both go). A waiter keeps its place across its wake-ups, and a ``Ticket``
  carries a question's arrival and last round from one acquire to the next (its pages).
- Shortest question first: the order is (round, size, arrival), where size is the calls the
  whole question takes (``Ticket.calls``), so within a round a question one call answers goes
  before the pages of a longer fetch. Aging keeps a long fetch moving: a page that has
  waited a whole window goes to the front of the round being served, as a one-call
  question would, so every fetch advances at least one page per window.
  Questions of nobody in particular (no asker) stay in the round being served: among
  themselves, first come, first served.
- Nobody holds more than ``MAX_QUEUED_PER_ASKER`` places in the queue: a new question of
  an asker who does is refused at once (``TooManyQuestions``), before any call.
- Waiting sleeps until the reported wait (plus jitter), never polls in a tight loop. The
  wait is until this caller's turn: with k waiters ahead, until the (k+1)-th slot frees,
  so waiters wake one by one, not together. A waiter that is cancelled or times out
  deregisters; one whose process died expires after its grace and stops holding others up.
- Waiting costs Redis connections only while a waiter looks: a process's budget uses at
  most ``REDIS_CONNECTIONS`` at once, however many wait (hundreds, at a burst or shutdown).

``FailoverBudget`` keeps the bot usable while Redis is down: the budget is then enforced per
process by a ``LocalCallBudget`` that has been shadowing this process's own starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from abc import ABC, abstractmethod
from bisect import insort
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Protocol, TypeVar, runtime_checkable

import redis.asyncio as aioredis

from bot.config import RateLimit
from bot.errors import BudgetTimeout, TooManyQuestions
from bot.hss.budget_script import BUDGET_LUA
from bot.models import HssApi
from bot.storage import keys
from bot.storage.outage import REDIS_OUTAGE, RedisHealth

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Places in the interactive queue one asker may hold (a fetch holds one, however many
#: people share it): one person cannot push everyone else's questions back.
MAX_QUEUED_PER_ASKER = 3
#: Redis connections one budget uses at once: waiters look in turn instead of each taking
#: one of the pool's connections (which ran out with 200 waiters at shutdown).
REDIS_CONNECTIONS = 4

#: The person behind the current call (a Slack user id, ``cli``), set per request; tasks
#: spawned for the request inherit it. None: nobody in particular (background work).
asker: ContextVar[str | None] = ContextVar("asker", default=None)


class Priority(IntEnum):
    INTERACTIVE = 0
    BACKGROUND = 1


class Ticket:
    """A question's place in the interactive queue, outlasting one ``acquire``.

    Every interactive acquire holds one while it waits, so its wake-ups keep its place.
    Passing the same ticket to several acquires (the pages of one fetch, retries) makes
    them one question: each keeps the arrival of the first and takes the round after the
    last granted one, and only the first can be refused for its asker's cap. Arrivals and
    rounds are kept per clock (Redis's, this process's): a ticket may move from Redis to
    the fallback and back. ``asker`` is read from the context at the first acquire.

    ``calls`` is the question's size: how many calls it takes in all (1: one call answers
    it), set by whoever knows (the lookup from the mirror, the client from a first page).
    A waiter queues with the size its ticket has when it starts waiting.
    """

    __slots__ = ("arrivals", "asker", "calls", "turns")

    def __init__(self, calls: int = 1) -> None:
        self.arrivals: dict[str, float] = {}
        self.turns: dict[str, int] = {}
        self.asker: str | None = None
        self.calls = calls


@runtime_checkable
class CallBudget(Protocol):
    async def acquire(
        self,
        priority: Priority = Priority.INTERACTIVE,
        *,
        timeout: float | None = None,
        ticket: Ticket | None = None,
    ) -> None: ...

    async def next_slot_in(self) -> float: ...

    async def penalize(self, retry_after: float | None) -> None: ...

    async def calls_left(self) -> int: ...


#: Called when this context's caller is granted a call slot: a fetch whose HSS call has begun
#: is worth finishing at shutdown (its slot is spent, its answer may hold a flip), one still
#: waiting for a slot is not.
on_grant: ContextVar[Callable[[], None] | None] = ContextVar("on_grant", default=None)


def _new_id() -> str:
    return uuid.uuid4().hex


def _penalty_seconds(limit: RateLimit, retry_after: float | None) -> float:
    """How long a 429 blocks: HSS's Retry-After when it is usable, else a whole window."""
    if retry_after is None or not 0 < retry_after < 24 * 3600:
        return limit.window
    return retry_after


@dataclass(frozen=True, slots=True)
class _Reply:
    """What the budget script answered (see ``BUDGET_LUA``)."""

    granted: int
    wait: float
    count: int
    arrival: float | None
    turn: int | None


@dataclass(frozen=True, slots=True, order=True)
class _Place:
    """A waiter's place in the in-process queue, ordered as Redis orders them."""

    round: int
    size: int  # calls the question takes in all (1: one call answers it)
    arrival: float
    waiter: str
    asker: str = field(compare=False)
    queued: float = field(compare=False, default=0.0)  # when it began to wait (aging)


def _size(calls: int) -> int:
    """The size key as the script keeps it (at most 1000)."""
    return min(max(calls, 1), 1000)


class _TurnQueue:
    """The in-process twin of the script's queue: rounds by asker, then size, then arrival."""

    def __init__(self) -> None:
        self._places: dict[str, _Place] = {}
        self._askers: dict[str, tuple[int, int]] = {}  # asker -> (places held, last round)

    def __len__(self) -> int:
        return len(self._places)

    def place_of(self, waiter: str) -> _Place | None:
        return self._places.get(waiter)

    def ahead_of(self, place: _Place) -> int:
        return sum(other < place for other in self._places.values())

    def ahead_of_new(self, asker: str) -> int:
        """Places a new question of ``asker`` would queue behind (every one of its round)."""
        held, last = self._askers.get(asker, (0, 0)) if asker else (0, 0)
        round_ = self._round(asker, None, held, last)
        return sum((p.round, p.size) <= (round_, 1) for p in self._places.values())

    def join(
        self,
        waiter: str,
        arrival: float,
        asker: str,
        last_turn: int | None,
        *,
        calls: int,
        now: float,
    ) -> tuple[_Place, int]:
        """The waiter's place (a new one if it has none) and how many its asker held before."""
        if (place := self._places.get(waiter)) is not None:
            return place, 0
        held, last = self._askers.get(asker, (0, 0)) if asker else (0, 0)
        round_ = self._round(asker, last_turn, held, last)
        place = _Place(round_, _size(calls), arrival, waiter, asker, queued=now)
        self._places[waiter] = place
        if asker:
            self._askers[asker] = (held + 1, round_)
        return place, held

    def age(self, waiter: str, now: float, window: float) -> float:
        """Aging (as the script does it): seconds until the waiter's place of a longer question
        moves to the front of the round being served; 0 when it has or is not one."""
        place = self._places[waiter]
        if place.size == 1:
            return 0.0
        if place.queued + window > now:
            return place.queued + window - now
        head = min(self._places.values())
        self._places[waiter] = replace(place, round=min(head.round, place.round), size=1)
        return 0.0

    def _round(self, asker: str, last_turn: int | None, held: int, last: int) -> int:
        head = min(self._places.values(), default=None)
        round_ = head.round if head is not None else 0
        if not asker:
            return round_
        if last_turn is not None and last_turn >= round_:
            round_ += 1
        return max(round_, last + 1) if held else round_

    def leave(self, waiter: str) -> None:
        place = self._places.pop(waiter, None)
        if place is None or not place.asker:
            return
        held, last = self._askers.pop(place.asker)
        if held > 1:
            self._askers[place.asker] = (held - 1, last)


class _SlidingWindowBudget(ABC):
    """The waiting loop shared by the Redis and in-process budgets."""

    def __init__(self, *, limit: RateLimit, reserve: int) -> None:
        self.limit = limit
        # With one call per window, keeping a slot back would starve background work forever.
        self.reserve = max(0, min(reserve, limit.calls - 1))
        self._jitter = min(0.05, limit.window / 100)

    async def acquire(
        self,
        priority: Priority = Priority.INTERACTIVE,
        *,
        timeout: float | None = None,
        ticket: Ticket | None = None,
    ) -> None:
        await self.acquire_call(priority, timeout=timeout, ticket=ticket)

    async def acquire_call(
        self,
        priority: Priority = Priority.INTERACTIVE,
        *,
        timeout: float | None = None,
        ticket: Ticket | None = None,
    ) -> str:
        """Like ``acquire``; returns the id the call start was logged under."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        call_id = _new_id()
        waiter = _new_id() if priority is Priority.INTERACTIVE else ""
        place = Ticket() if ticket is None else ticket
        if place.asker is None:
            place.asker = asker.get() or ""
        try:
            while (wait := await self._attempt(priority, call_id, waiter, place)) > 0:
                await self._sleep(wait, deadline)
        except BaseException:
            if waiter:  # granted waiters are removed atomically; others must leave
                await self._leave(waiter)
            raise
        if (granted := on_grant.get()) is not None:
            granted()
        return call_id

    async def _sleep(self, wait: float, deadline: float | None) -> None:
        # The wait is until this caller's turn (waiters ahead leaving can only make it sooner
        # by one slot each), so a wait beyond the deadline is already a timeout.
        if deadline is not None and wait > deadline - time.monotonic():
            raise BudgetTimeout(wait)
        await asyncio.sleep(max(0.001, wait + random.uniform(0.0, self._jitter)))

    async def next_slot_in(self) -> float:
        """Seconds until a new question of the current ``asker`` could start."""
        return (await self._peek())[0]

    async def calls_left(self) -> int:
        return max(0, self.limit.calls - (await self._peek())[1])

    @abstractmethod
    async def _attempt(
        self, priority: Priority, call_id: str, waiter: str, ticket: Ticket
    ) -> float:
        """Start a call now (returns 0.0) or register ``waiter`` and return the wait."""

    @abstractmethod
    async def _leave(self, waiter: str) -> None: ...

    @abstractmethod
    async def _peek(self) -> tuple[float, int]:
        """(seconds until a new interactive call could start, starts in the window)."""


class RedisCallBudget(_SlidingWindowBudget):
    """The budget of one API (``api``) shared by every process using ``redis`` and ``scope``
    (the AK)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        scope: str,
        limit: RateLimit,
        api: HssApi = HssApi.REGISTRIES,
        reserve: int = 1,
        waiter_grace: float = 2.0,
        max_queued_per_asker: int = MAX_QUEUED_PER_ASKER,
        connections: int = REDIS_CONNECTIONS,
    ) -> None:
        super().__init__(limit=limit, reserve=reserve)
        self._redis = redis
        self.api = api
        self._keys = [
            keys.budget_log(scope, api),
            keys.budget_waiters(scope, api),
            keys.budget_queue(scope, api),
            keys.budget_places(scope, api),
            keys.budget_askers(scope, api),
        ]
        # A waiter refreshes its entry each time it wakes; the grace covers a slow wake-up.
        self._grace = waiter_grace
        self._cap = max_queued_per_asker
        self._connections = asyncio.Semaphore(connections)
        self._script = redis.register_script(BUDGET_LUA)

    async def _run(self, mode: str, call_id: str, *args: str | float) -> _Reply:
        base: list[str | float] = [mode, self.limit.calls, self.limit.window, call_id]
        async with self._connections:
            raw = await self._script(keys=self._keys, args=[*base, *args])
        granted, wait, count, arrival, turn = raw
        return _Reply(
            granted=int(granted),
            wait=float(wait),
            count=int(count),
            arrival=float(arrival) if arrival else None,
            turn=int(turn) if turn else None,
        )

    async def _attempt(
        self, priority: Priority, call_id: str, waiter: str, ticket: Ticket
    ) -> float:
        arrival = ticket.arrivals.get("redis", "")
        turn = ticket.turns.get("redis", "")
        question = (ticket.asker or "", self._cap, turn, ticket.calls)
        args = (int(priority), waiter, self._grace, self.reserve, arrival, *question)
        reply = await self._run("acquire", call_id, *args)
        if reply.granted < 0:
            raise TooManyQuestions(ticket.asker or "", self._cap)
        if reply.arrival is not None:
            ticket.arrivals["redis"] = reply.arrival
        if reply.granted and reply.turn is not None:
            ticket.turns["redis"] = reply.turn
        return 0.0 if reply.granted else max(reply.wait, 0.001)

    async def _leave(self, waiter: str) -> None:
        # Best effort: if Redis is gone the entries expire on their own after the grace.
        with contextlib.suppress(*REDIS_OUTAGE):
            await self._run("leave", "", waiter)

    async def _peek(self) -> tuple[float, int]:
        reply = await self._run("peek", "", asker.get() or "")
        return reply.wait, reply.count

    async def penalize(self, retry_after: float | None) -> None:
        await self._run("penalize", f"429:{_new_id()}", _penalty_seconds(self.limit, retry_after))

    async def note_starts(self, starts: list[tuple[str, float]]) -> None:
        """Tell Redis about calls (id, age in s) started while it was unreachable."""
        await self._run("note", "", *(x for call_id, age in starts for x in (call_id, age)))


class LocalCallBudget(_SlidingWindowBudget):
    """The same budget for one process (asyncio-safe, not thread-safe)."""

    def __init__(
        self,
        *,
        limit: RateLimit,
        clock: Callable[[], float] = time.monotonic,
        reserve: int = 1,
        waiter_grace: float = 2.0,
        max_queued_per_asker: int = MAX_QUEUED_PER_ASKER,
    ) -> None:
        super().__init__(limit=limit, reserve=reserve)
        self._clock = clock
        self._grace = waiter_grace
        self._cap = max_queued_per_asker
        self._starts: list[tuple[float, str]] = []  # sorted by time; phantoms may be ahead
        self._queue = _TurnQueue()
        self._expiry: dict[str, float] = {}  # of each interactive waiter

    def _trim(self) -> float:
        now = self._clock()
        horizon = now - self.limit.window
        while self._starts and self._starts[0][0] <= horizon:
            self._starts.pop(0)
        for waiter in [w for w, at in self._expiry.items() if at <= now]:
            self._forget(waiter)
        return now

    def _forget(self, waiter: str) -> None:
        self._queue.leave(waiter)
        self._expiry.pop(waiter, None)

    def _wait_for(self, needed: int, now: float) -> float:
        rounds, needed = divmod(needed - 1, self.limit.calls)
        idx = len(self._starts) - self.limit.calls + needed
        if idx < 0:
            return rounds * self.limit.window
        return max(0.0, self._starts[idx][0] + self.limit.window - now) + rounds * self.limit.window

    def _interactive_wait(self, waiter: str, ticket: Ticket, now: float) -> float:
        if not waiter:
            return self._wait_for(len(self._queue) + 1, now)
        new = "local" not in ticket.arrivals
        arrival = min(ticket.arrivals.get("local", now), now)
        turn = ticket.turns.get("local")
        place, held = self._queue.join(
            waiter, arrival, ticket.asker or "", turn, calls=ticket.calls, now=now
        )
        due = self._queue.age(waiter, now, self.limit.window)
        place = self._queue.place_of(waiter) or place
        wait = self._wait_for(self._queue.ahead_of(place) + 1, now)
        if due > 0:  # wake when aging moves the place, if its turn has not come by then
            wait = min(wait, due)
        if wait > 0 and new and place.asker and held >= self._cap:
            self._forget(waiter)
            raise TooManyQuestions(place.asker, self._cap)
        ticket.arrivals["local"] = place.arrival
        return wait

    async def _attempt(
        self, priority: Priority, call_id: str, waiter: str, ticket: Ticket
    ) -> float:
        now = self._trim()
        if priority is Priority.INTERACTIVE:
            wait = self._interactive_wait(waiter, ticket, now)
        else:
            wait = self._wait_for(1 + self.reserve, now)
            if wait == 0 and self._expiry:
                wait = self.limit.window / self.limit.calls
        if wait > 0:
            if waiter:
                self._expiry[waiter] = now + wait + self._grace
            return wait
        self.record(call_id, now)
        if (place := self._queue.place_of(waiter)) is not None:
            ticket.turns["local"] = place.round
        self._forget(waiter)
        return 0.0

    async def _leave(self, waiter: str) -> None:
        self._forget(waiter)

    async def _peek(self) -> tuple[float, int]:
        now = self._trim()
        ahead = self._queue.ahead_of_new(asker.get() or "")
        return self._wait_for(ahead + 1, now), len(self._starts)

    async def penalize(self, retry_after: float | None) -> None:
        now = self._trim()
        at = now + _penalty_seconds(self.limit, retry_after) - self.limit.window
        self._starts = [s for s in self._starts if s[0] > at]
        penalty = _new_id()
        for i in range(self.limit.calls):
            insort(self._starts, (at, f"429:{penalty}:{i}"))

    def record(self, call_id: str, at: float | None = None) -> None:
        """Count a call started elsewhere (granted by Redis) against this process's budget."""
        insort(self._starts, (self._clock() if at is None else at, call_id))

    def recent_starts(self) -> list[tuple[str, float]]:
        """(call id, age in s) of the starts still in the window; a 429's phantoms have a
        negative age when they block beyond one window from now."""
        now = self._trim()
        return [(call_id, now - at) for at, call_id in self._starts]


class _Unavailable:
    """Marks "Redis did not answer" (a result of ``None`` is a valid answer)."""


_UNAVAILABLE = _Unavailable()


class FailoverBudget:
    """Redis when it answers; the in-process budget while it does not. One WARNING per
    outage, one INFO on recovery; during an outage Redis is probed at most once per
    ``probe_interval`` so callers do not each pay for a failing connection."""

    def __init__(
        self,
        primary: RedisCallBudget,
        fallback: LocalCallBudget,
        *,
        health: RedisHealth | None = None,
        probe_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._health = health or RedisHealth(probe_interval=probe_interval, clock=clock)

    @property
    def degraded(self) -> bool:
        return self._health.down

    async def acquire(
        self,
        priority: Priority = Priority.INTERACTIVE,
        *,
        timeout: float | None = None,
        ticket: Ticket | None = None,
    ) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        place = Ticket() if ticket is None else ticket  # a waiter keeps it through an outage
        call_id = await self._via_primary(
            lambda: self._primary.acquire_call(priority, timeout=timeout, ticket=place)
        )
        if isinstance(call_id, str):
            self._fallback.record(call_id)  # shadow it, in case Redis goes away within the window
            return
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        await self._fallback.acquire(priority, timeout=left, ticket=place)

    async def next_slot_in(self) -> float:
        wait = await self._via_primary(self._primary.next_slot_in)
        return wait if isinstance(wait, float) else await self._fallback.next_slot_in()

    async def calls_left(self) -> int:
        left = await self._via_primary(self._primary.calls_left)
        return left if isinstance(left, int) else await self._fallback.calls_left()

    async def penalize(self, retry_after: float | None) -> None:
        await self._fallback.penalize(retry_after)  # an outage must not forget a 429
        await self._via_primary(lambda: self._primary.penalize(retry_after))

    async def _via_primary(self, op: Callable[[], Awaitable[T]]) -> T | _Unavailable:
        probing = self._health.down
        if not self._health.should_try():
            return _UNAVAILABLE
        try:
            if probing:  # Redis must learn what we started without it before it grants more
                await self._primary.note_starts(self._fallback.recent_starts())
            result = await op()
        except REDIS_OUTAGE as exc:
            self._health.failed(exc)
            return _UNAVAILABLE
        self._health.succeeded()
        return result
