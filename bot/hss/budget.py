"""The HSS call budget: at most ``limit.calls`` call starts in any ``limit.window`` seconds.

HSS allows one IAM user 5 calls a minute, shared by every slash command, CLI run and
replica, so the budget lives in Redis (one Lua script, on Redis's clock) and every process
with the same Redis and AK draws from it.

Rules shared by both implementations:

- Interactive first: an interactive caller that has to wait registers as a waiter; a
  background acquire is refused while any live waiter exists and while starting would leave
  fewer than ``reserve`` (default 1) slots free, so a person never queues behind the refresher.
- A 429 from HSS (``penalize``) fills the window with phantom starts: nothing starts until
  ``retry_after`` (or, without one, a whole window) has passed.
- Interactive callers go first come, first served across processes: a caller starts only
  while fewer live waiters arrived before it than slots are free (two free slots: the first
  two may both go). A waiter keeps its arrival across its wake-ups, and a ``Ticket`` lets
  several acquires (the pages of one fetch) share the arrival of the first.
- Waiting sleeps until the reported wait (plus jitter), never polls in a tight loop. The
  wait is until this caller's turn: with k waiters ahead, until the (k+1)-th slot frees,
  so waiters wake one by one, not together. A waiter that is cancelled or times out
  deregisters; one whose process died expires after its grace and stops holding others up.

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
from enum import IntEnum
from typing import Protocol, TypeVar, runtime_checkable

import redis.asyncio as aioredis

from bot.config import RateLimit
from bot.errors import BudgetTimeout
from bot.hss.budget_script import BUDGET_LUA
from bot.storage import keys
from bot.storage.outage import REDIS_OUTAGE, RedisHealth

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Priority(IntEnum):
    INTERACTIVE = 0
    BACKGROUND = 1


class Ticket:
    """A place in the interactive queue that outlasts one ``acquire``.

    Every interactive acquire holds one while it waits, so its retries keep its arrival.
    Passing the same ticket to several acquires (the pages of one fetch) queues each of
    them at the arrival of the first instead of at the back. Arrivals are kept per clock
    (Redis's, this process's): a ticket may move from Redis to the fallback and back.
    """

    __slots__ = ("arrivals",)

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}


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
    """The budget shared by every process using ``redis`` and ``scope`` (the AK)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        scope: str,
        limit: RateLimit,
        reserve: int = 1,
        waiter_grace: float = 2.0,
    ) -> None:
        super().__init__(limit=limit, reserve=reserve)
        self._redis = redis
        self._keys = [keys.budget_log(scope), keys.budget_waiters(scope), keys.budget_queue(scope)]
        # A waiter refreshes its entry each time it wakes; the grace covers a slow wake-up.
        self._grace = waiter_grace
        self._script = redis.register_script(BUDGET_LUA)

    async def _run(
        self, mode: str, call_id: str, *args: str | float
    ) -> tuple[bool, float, int, float | None]:
        base: list[str | float] = [mode, self.limit.calls, self.limit.window, call_id]
        granted, wait, count, arrival = await self._script(keys=self._keys, args=[*base, *args])
        return bool(int(granted)), float(wait), int(count), float(arrival) if arrival else None

    async def _attempt(
        self, priority: Priority, call_id: str, waiter: str, ticket: Ticket
    ) -> float:
        arrival = ticket.arrivals.get("redis", "")
        args = (int(priority), waiter, self._grace, self.reserve, arrival)
        granted, wait, _, queued_at = await self._run("acquire", call_id, *args)
        if queued_at is not None:
            ticket.arrivals["redis"] = queued_at
        return 0.0 if granted else max(wait, 0.001)

    async def _leave(self, waiter: str) -> None:
        # Best effort: if Redis is gone the entries expire on their own after the grace.
        with contextlib.suppress(*REDIS_OUTAGE):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._keys[1], waiter)
                pipe.zrem(self._keys[2], waiter)
                await pipe.execute()

    async def _peek(self) -> tuple[float, int]:
        _, wait, count, _ = await self._run("peek", "")
        return wait, count

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
    ) -> None:
        super().__init__(limit=limit, reserve=reserve)
        self._clock = clock
        self._grace = waiter_grace
        self._starts: list[tuple[float, str]] = []  # sorted by time; phantoms may be ahead
        # Interactive waiters, in arrival order (ties by id, as in Redis), and their expiry.
        self._queue: dict[str, tuple[float, str]] = {}
        self._expiry: dict[str, float] = {}

    def _trim(self) -> float:
        now = self._clock()
        horizon = now - self.limit.window
        while self._starts and self._starts[0][0] <= horizon:
            self._starts.pop(0)
        for waiter in [w for w, at in self._expiry.items() if at <= now]:
            self._forget(waiter)
        return now

    def _forget(self, waiter: str) -> None:
        self._queue.pop(waiter, None)
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
        place = self._queue.setdefault(
            waiter, (min(ticket.arrivals.get("local", now), now), waiter)
        )
        ticket.arrivals["local"] = place[0]
        return self._wait_for(sum(other < place for other in self._queue.values()) + 1, now)

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
        self._forget(waiter)
        return 0.0

    async def _leave(self, waiter: str) -> None:
        self._forget(waiter)

    async def _peek(self) -> tuple[float, int]:
        now = self._trim()
        return self._wait_for(len(self._queue) + 1, now), len(self._starts)

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
