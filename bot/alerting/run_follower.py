"""Following sync runs: list them, fetch the failures of runs whose counts moved, and tell
every channel that follows them, once.

While any run watch exists, one replica at a time (a cluster lease, ``keys.runs_follower_
lease``) runs a round every ``TASKS_POLL_SECONDS`` (``keys.runs_follow_round`` keeps the pace
across replicas):

1. one list call (``RunsService.refresh``, background priority, the tasks budget) shows the
   status and counts of the newest 200 runs: the change detector;
2. for each run some watch follows (it began after the watch was made; older runs are the
   baseline) whose failed count, size or end differ from what the channels were last told,
   the run's failed registries (the ``sync_status=failed`` view) and those of the previous
   run of its kind come from the mirror, refreshed through the lookup service at background
   priority (the registries budget) only when the mirror's copy predates the list call
   that showed the change (for an ended previous run: its end). A run that lists no failure
   costs no call;
3. each channel's step (:func:`bot.alerting.run_flips.plan_channel`) is written with its
   outbox items in one ``MULTI`` under ``WATCH`` of the channel's state, and the items carry
   dedup ids: a replica that lost the lease mid-round, or a second one, finds the work done
   and queues nothing, and the outbox sends an item queued twice once;
4. stuck runs and missed scheduled runs are told once each.

A failed list or fetch leaves the state as it was: the next round sees the same change and
tries again, so an HSS fault delays an alert and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from bot.alerting.flips import Flip
from bot.alerting.run_failures import RunFailures
from bot.alerting.run_flips import (
    compare,
    complete,
    follows,
    is_stuck,
    missed_run,
    progress,
)
from bot.alerting.run_state import RunSeen, Told, read_seen, write_seen
from bot.alerting.run_telling import Teller
from bot.alerting.stoppable import unless_stopped
from bot.errors import BotError
from bot.hss.budget import Priority
from bot.lookup import LookupService
from bot.models import LookupRequest, TaskRef
from bot.ops import logs
from bot.runs import RunKind, SyncRun
from bot.runs_service import RunsService
from bot.storage import keys
from bot.storage.lease import RedisLease, keep_alive
from bot.storage.outage import STORE_UNAVAILABLE, OutageGate
from bot.storage.run_watch_store import RunWatch, RunWatchStore
from bot.storage.runs_store import RunsSnapshot

logger = logging.getLogger(__name__)

#: How long the follower's lease lives without renewal (renewed every third of it), at most:
#: it is one poll when polls are shorter, so a replica that dies inside a round holds up
#: following for one poll, as a dead scheduler's lease does, not for many.
LEASE_SECONDS = 30.0
#: The shortest and longest wait of the loop between looks at the round's pace.
_MIN_WAIT = 0.05
_MAX_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class Pace:
    """The settings a follower keeps to (seconds)."""

    poll: float = 300.0
    stuck_after: float = 7200.0
    missed_after: float = 93_600.0


def channel_watches(watches: Sequence[RunWatch], run: SyncRun) -> list[RunWatch]:
    """The watch of each channel that follows ``run``: one message per run and channel, so
    a channel following both scheduled and all runs hears through its watch of the kind."""
    chosen: dict[str, RunWatch] = {}
    for watch in watches:
        if not follows(watch.kind, watch.created_at, run):
            continue
        held = chosen.get(watch.channel)
        if held is None or (held.kind is None and watch.kind is not None):
            chosen[watch.channel] = watch
    return [chosen[c] for c in sorted(chosen)]


def _told(run: SyncRun) -> Told:
    return (run.failed_num, run.total_num, run.ended)


class RunFollower:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        runs: RunsService,
        watches: RunWatchStore,
        lookups: LookupService,
        pace: Pace,
        clock: Callable[[], float] = time.time,
        lease_seconds: float | None = None,
    ) -> None:
        self._redis = redis
        self._runs = runs
        self._watches = watches
        self._lookups = lookups
        self._pace = pace
        self._clock = clock
        self._lease = Lock(
            redis,
            keys.runs_follower_lease(),
            timeout=lease_seconds or min(LEASE_SECONDS, max(pace.poll, 1.0)),
            thread_local=False,
        )
        self._outage = OutageGate(
            logger=logger,
            started="following runs paused: Redis is not answering (%s)",
            ended="following runs resumed: Redis answers again",
        )
        self._fetch = RunFailures(lookups=lookups, poll=pace.poll, clock=clock)
        self._teller = Teller(redis, clock=clock)
        self._failing: set[str] = set()  # what failed last round (logged once until it works)

    # --- the loop ---

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                await self._step(stopping)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), await self._wait())
        finally:
            stopping.cancel()

    async def _step(self, stopping: asyncio.Task[bool]) -> None:
        """``run_once``, abandoned if ``stopping`` ends first: a round may wait minutes for
        background call slots, and shutting down must not (the next leader redoes it)."""
        step = await unless_stopped(self.run_once(), stopping)
        if step is None:
            return
        try:
            step.result()
            self._outage.succeeded()
        except STORE_UNAVAILABLE as exc:
            self._outage.failed(exc)
        except Exception:
            logger.exception("following runs failed; trying again")

    async def _wait(self) -> float:
        try:
            raw = await self._redis.get(keys.runs_follow_round())
        except STORE_UNAVAILABLE:
            return _MAX_WAIT
        due = (float(raw) if raw else 0.0) + self._pace.poll - self._clock()
        return min(max(due, _MIN_WAIT), _MAX_WAIT)

    async def run_once(self) -> int | None:
        """One round if one is due and this replica holds the lease: the outbox items
        queued, or None when no round ran (none due, another replica's turn, no watch, or
        the list failed)."""
        watches = list(await self._watches.all())
        if not watches or not await self._due():
            return None
        if not await self._take():
            return None
        async with keep_alive(RedisLease(self._lease)):
            if not await self._due():  # another replica's round ended as we took the lease
                return None
            await self._redis.set(
                keys.runs_follow_round(),
                repr(self._clock()),
                px=int(self._pace.poll * 2000) + 1000,
            )
            with logs.request_scope(logs.new_request_id("runs-")):
                snap = await self._list()
                if snap is None:
                    return None
                return await self.follow(snap, watches)

    async def _due(self) -> bool:
        raw = await self._redis.get(keys.runs_follow_round())
        return raw is None or self._clock() - float(raw) >= self._pace.poll

    async def _take(self) -> bool:
        if self._lease.local.token is not None:
            with contextlib.suppress(LockError):
                return bool(await self._lease.reacquire())
        return bool(await self._lease.acquire(blocking=False))

    async def _list(self) -> RunsSnapshot | None:
        try:
            snap = await self._runs.refresh(priority=Priority.BACKGROUND, max_age=0.0)
        except BotError as exc:
            self._note_failure("list", f"listing sync runs failed: {exc}")
            return None
        self._note_success("list", "listing sync runs works again")
        return snap

    # --- one round ---

    async def follow(self, snap: RunsSnapshot, watches: Sequence[RunWatch]) -> int:
        """Tell every channel what ``snap`` means for the runs it follows; items queued."""
        queued = 0
        for run in snap.runs:
            followers = channel_watches(watches, run)
            if followers:
                queued += await self._follow_run(snap, run, followers)
        for watch in watches:
            if watch.kind is RunKind.AUTO:
                queued += await self._missed(snap, watch)
        return queued

    async def _follow_run(
        self, snap: RunsSnapshot, run: SyncRun, watches: Sequence[RunWatch]
    ) -> int:
        ref = self._ref(run)
        seen = await read_seen(self._redis, keys.run_follow(ref))
        if seen is not None and seen.done:
            return 0
        now = self._clock()
        moved = seen is None or seen.progress != progress(run)
        changed_at = now if moved or seen is None else seen.changed_at
        told = seen.told if seen is not None else None
        failures: tuple[list[Flip], list[Flip]] | None = None
        finished: frozenset[str] = frozenset()
        if told != _told(run):
            failures = await self._failures(snap, run)
            if failures is not None and failures[1] and not complete(run):
                finished = await self._fetch.finished(run)
        stuck = is_stuck(run, changed_at=changed_at, now=now, after=self._pace.stuck_after)
        queued, closed, told_all = 0, True, True
        for watch in watches:
            diff = None
            if failures is not None:
                diff = compare(
                    failures[0],
                    failures[1],
                    complete=complete(run),
                    finished=finished,
                    types=watch.types,
                    name=watch.name,
                )
            scope = LookupRequest(task_id=run.task_id, types=watch.types, name=watch.name)
            told_one = await self._teller.tell(
                watch, scope, ref, run, diff, watches=self._watches, stuck=stuck, since=changed_at
            )
            if told_one is None:
                told_all = False
                continue
            queued += told_one[0]
            closed = closed and told_one[1].closed
        if failures is not None and told_all:
            told = _told(run)
        done = run.ended and told == _told(run) and closed
        await write_seen(
            self._redis, keys.run_follow(ref), RunSeen(progress(run), changed_at, told, done)
        )
        return queued

    def _ref(self, run: SyncRun) -> TaskRef:
        return self._lookups.ref(LookupRequest(task_id=run.task_id))

    async def _failures(
        self, snap: RunsSnapshot, run: SyncRun
    ) -> tuple[list[Flip], list[Flip]] | None:
        """The run's failed registries and the previous run's, or None if they could not be
        had this round (said once, tried again next round)."""
        what = f"failures of run {run.task_id}"
        try:
            found = await self._fetch.both(snap.runs, snap.fetched_at, run)
        except BotError as exc:
            self._note_failure(what, f"fetching the {what} failed: {exc}")
            return None
        self._note_success(what, f"fetching the {what} works again")
        return found

    async def _missed(self, snap: RunsSnapshot, watch: RunWatch) -> int:
        now = self._clock()
        after = self._pace.missed_after
        missed = missed_run(snap.runs, created_at=watch.created_at, now=now, after=after)
        if missed is None or not watch.alerts(now):
            return 0
        ref = self._lookups.ref(LookupRequest(task_id=missed.mark))
        return await self._teller.missed(watch.channel, ref, missed, after=after)

    # --- telling a channel ---

    # --- saying a failure once ---

    def _note_failure(self, what: str, line: str) -> None:
        if what in self._failing:
            logger.debug("%s", line)
        else:
            logger.warning("%s", line)
            self._failing.add(what)

    def _note_success(self, what: str, line: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            logger.info("%s", line)
