"""Keeping watched tasks' mirrors current: one background refresh at a time, oldest data first.

Each step (``run_once``) reads every watched task's full-view age from Redis, takes the
oldest that is at least ``poll_interval`` old (never-fetched first, ties by task id) and
whose lease no other replica holds, and refreshes it at ``Priority.BACKGROUND``. Oldest
first is a round robin: a refreshed task goes to the back, so none starves.

Pacing is the call budget's job: the refresh waits inside the budget for a background slot
(behind every interactive waiter, leaving a reserve slot free), and a replica runs one
refresh at a time, so the loop never starts refreshes faster than the budget grants them.
With W one-call tasks and c calls a window each task comes round about every W/(c-1)
windows (background calls leave one slot a window to people: W/4 minutes at 5 a minute).

Leases: ``redis.asyncio.lock.Lock`` on ``keys.scheduler_lease(ref)``, taken without
blocking, timeout ``poll_interval``, kept by :func:`bot.storage.lease.keep_alive` (extended
every third of that while the refresh runs, through short Redis outages) and released after
it. A replica that dies leaves a lease that expires within one poll interval;
the others' loops wake when it expires, so its task is taken over within two. (One that dies
mid-fetch also leaves the lookup service's view lock, ``lookup.LOCK_TTL`` = 6 s: below a
3 s poll interval that lock, not the lease, bounds the takeover.)

Errors: an ``HssError``/``BudgetTimeout`` is logged once per task (until the task refreshes
again) and that task waits ``poll_interval`` before its next try while the others go on. An
authentication lock-out (``HssAuthError``) idles the whole scheduler: every
``poll_interval`` it tries once more, which costs no call while the lock-out stands (the
lookup service refuses before asking the budget), and resumes when an operator cleared it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock

from bot.alerting.stoppable import unless_stopped
from bot.errors import BudgetTimeout, CommandError, HssAuthError, HssError, StoreError
from bot.hss.budget import Priority
from bot.lookup import LookupService
from bot.mirror import view_key
from bot.models import ApiFilter, LookupRequest, TaskRef
from bot.ops import logs
from bot.storage import keys
from bot.storage.lease import RedisLease, keep_alive
from bot.storage.mirror_codec import decode_meta
from bot.storage.outage import STORE_UNAVAILABLE, OutageGate
from bot.storage.watch_store import WatchStore

logger = logging.getLogger(__name__)

_FULL_VIEW = view_key(ApiFilter())
#: Shortest sleep of the loop: due times and lease expiries land a hair late, never spin.
_MIN_WAIT = 0.005


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A watched task as the lookup service refreshes it, and its full view's age."""

    ref: TaskRef
    request: LookupRequest
    fetched_at: float | None

    @property
    def order(self) -> tuple[float, str, str, str]:
        at = float("-inf") if self.fetched_at is None else self.fetched_at
        ref = self.ref
        return (at, ref.task_id, ref.project_id, ref.enterprise_project_id or "")


class Scheduler:
    def __init__(
        self,
        *,
        lookups: LookupService,
        watches: WatchStore,
        redis: aioredis.Redis,
        poll_interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not poll_interval > 0:
            raise ValueError("poll_interval must be positive")
        self._lookups = lookups
        self._watches = watches
        self._redis = redis
        self.poll_interval = poll_interval
        #: How long a lease outlives its last extension: a dead replica's task frees up
        #: within one poll interval and is taken over within two.
        self.lease_ttl = poll_interval
        self._clock = clock
        self._retry_at: dict[TaskRef, float] = {}
        self._failing: set[TaskRef] = set()
        self._idle_until: float | None = None
        self._locked_out = False
        #: Every refresh stops until Redis answers again (watches live there).
        self._outage = OutageGate(
            logger=logger,
            started="scheduler paused: Redis is not answering (%s)",
            ended="scheduler resumed: Redis answers again",
            detail=str,
        )
        self._wait = 0.0

    @property
    def next_wait(self) -> float:
        """Seconds until the last ``run_once`` that found nothing expects something due."""
        return self._wait

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh watched tasks until ``stop`` is set."""
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                if await self._step(stopping) is None:
                    await asyncio.wait({stopping}, timeout=self._wait)
        finally:
            stopping.cancel()

    async def _step(self, stopping: asyncio.Task[Any]) -> TaskRef | None:
        """``run_once``, abandoned (lease released) if ``stopping`` ends first: a refresh
        may wait minutes for a background slot, and shutting down must not."""
        step = await unless_stopped(self.run_once(), stopping)
        if step is None:
            return None
        try:
            return step.result()
        except Exception:
            # A bug must not end background refreshes for good: say so and go on.
            logger.exception("scheduler step failed")
            self._wait = self.poll_interval
            return None

    async def run_once(self) -> TaskRef | None:
        """Refresh the most overdue watched task whose lease is free; the task refreshed,
        or None when nothing was due, the due ones are leased, or the refresh failed."""
        now = self._clock()
        if self._idle_until is not None and now < self._idle_until:
            self._wait = self._idle_until - now
            return None
        self._wait = 0.0
        try:
            candidates = await self._candidates()
            return await self._refresh_first_free(candidates, now)
        except STORE_UNAVAILABLE as exc:
            self._outage.failed(exc)
            self._wait = self.poll_interval
            return None

    # --- choosing ---

    async def _candidates(self) -> list[_Candidate]:
        refs: dict[TaskRef, LookupRequest] = {}
        for watched in await self._watches.watched_tasks():
            request = LookupRequest(watched.task_id, ep=watched.enterprise_project_id)
            ref = self._lookups.ref(request)
            if ref.project_id == watched.project_id:
                refs.setdefault(ref, request)
        # Forget the failures of tasks nobody watches any more.
        self._retry_at = {r: at for r, at in self._retry_at.items() if r in refs}
        self._failing &= refs.keys()
        ages = await self._full_view_ages(list(refs))
        self._outage.succeeded()
        found = [
            _Candidate(ref, req, at) for (ref, req), at in zip(refs.items(), ages, strict=True)
        ]
        return sorted(found, key=lambda c: c.order)

    async def _full_view_ages(self, refs: Sequence[TaskRef]) -> list[float | None]:
        # Only the small meta field: the rows of every watched task are not needed to choose.
        async with self._redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.hget(keys.mirror(ref), "meta")
            metas = await pipe.execute()
        ages: list[float | None] = []
        for meta in metas:
            view = decode_meta(meta)["views"].get(_FULL_VIEW)
            ages.append(float(view[0]) if view else None)
        return ages

    def _due_at(self, cand: _Candidate) -> float:
        fetched = float("-inf") if cand.fetched_at is None else cand.fetched_at
        return max(fetched + self.poll_interval, self._retry_at.get(cand.ref, float("-inf")))

    async def _refresh_first_free(self, candidates: list[_Candidate], now: float) -> TaskRef | None:
        waits = [self.poll_interval]
        for cand in candidates:
            due = self._due_at(cand)
            if due > now:
                waits.append(due - now)
                continue
            lease = _lease(self._redis, cand.ref, self.lease_ttl)
            if not await lease.acquire(blocking=False):
                # Held by another replica: look again when it would expire if that one died.
                waits.append(await self._redis.pttl(keys.scheduler_lease(cand.ref)) / 1000)
                continue
            async with _holding(lease):
                if await self._still_due(cand, now):
                    return await self._refresh(cand)
        self._wait = max(_MIN_WAIT, min(waits) + _MIN_WAIT)
        return None

    async def _still_due(self, cand: _Candidate, now: float) -> bool:
        # Another replica may have refreshed it between our read and our lease.
        (fetched_at,) = await self._full_view_ages([cand.ref])
        return fetched_at is None or now - fetched_at >= self.poll_interval

    # --- refreshing ---

    async def _refresh(self, cand: _Candidate) -> TaskRef | None:
        try:
            # Its own request id: the HSS calls of one background refresh read as one story.
            with logs.request_scope(logs.new_request_id("bg-")):
                await self._lookups.refresh(
                    cand.request, priority=Priority.BACKGROUND, max_age=self.poll_interval
                )
        except HssAuthError as exc:
            self._idle_for_auth(exc)
            return None
        except (HssError, BudgetTimeout, StoreError, CommandError) as exc:
            # CommandError: a watch stored before its task id was refused (hidden characters,
            # a dot segment); no call is made. It must not stay the most overdue for ever,
            # ahead of every other watch.
            self._note_failure(cand.ref, exc)
            return None
        self._note_success(cand.ref)
        return cand.ref

    def _idle_for_auth(self, exc: HssAuthError) -> None:
        if not self._locked_out:
            logger.warning("scheduler idle until the HSS authentication lock-out clears: %s", exc)
        self._locked_out = True
        self._idle_until = self._clock() + self.poll_interval
        self._wait = self.poll_interval

    def _note_failure(self, ref: TaskRef, exc: Exception) -> None:
        if ref not in self._failing:
            logger.warning("background refresh of task %s failed: %s", ref.task_id, exc)
            self._failing.add(ref)
        else:
            logger.debug("background refresh of task %s failed again: %s", ref.task_id, exc)
        self._retry_at[ref] = self._clock() + self.poll_interval

    def _note_success(self, ref: TaskRef) -> None:
        if self._locked_out:
            logger.info("scheduler resumed: HSS accepts our credentials again")
            self._locked_out = False
            self._idle_until = None
        if ref in self._failing:
            logger.info("background refresh of task %s works again", ref.task_id)
            self._failing.discard(ref)
        self._retry_at.pop(ref, None)


def _lease(redis: aioredis.Redis, ref: TaskRef, ttl: float) -> Lock:
    return Lock(redis, keys.scheduler_lease(ref), timeout=ttl, thread_local=False)


@contextlib.asynccontextmanager
async def _holding(lease: Lock) -> AsyncIterator[None]:
    """Keep ``lease`` while the body runs (a refresh may wait minutes for the budget). A
    lease lost meanwhile does not stop the refresh, whose call is paid for; it is said."""
    async with keep_alive(RedisLease(lease)) as held:
        yield
    if held.lost:
        logger.warning("scheduler lease %s lost during a refresh", held.name)
