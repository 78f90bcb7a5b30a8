"""The sync runs as the bot knows them: one list call's snapshot, refreshed through the tasks
budget, and the task references (``latest``, ``latest-auto``, ``latest-manual``).

One ListImageScanTask call (offset 0, limit 200, no filter) serves every question about
runs: ``tasks auto name=x failed`` filters the snapshot here (:func:`filter_runs`), so
filters never cost calls of their own. ``peek`` never calls HSS. ``refresh`` makes at most
one call however many ask at once: callers in this process share it, and across replicas a
lock in Redis (``keys.runs_refresh_lock``) makes the others wait for the winner's snapshot,
as :mod:`bot.lookup` does for a task's views.

A refused list (the user lacks the API, or HSS does not offer it here) is remembered in
Redis for :data:`REFUSED_TTL` and raised as :class:`~bot.errors.RunsUnavailable` (one
sentence) without another call; it never locks the other API: lookups by task id go on.

While Redis is away (the outage gate the mirror and the budgets share), the runs go on as
lookups do, from this process's memory: ``peek`` answers with the newest snapshot this
process saw, a refresh calls through this process's budget with no cross-replica lock, and
a refusal is remembered here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock

from bot.errors import (
    CommandError,
    HssAuthError,
    HssError,
    RunsUnavailable,
    TooManyQuestions,
)
from bot.hss.budget import Priority, asker
from bot.hss.client import HssClient
from bot.hss.guards import LockedOut
from bot.runs import RunFilter, RunKind, SyncRun, latest, newest_first
from bot.storage import keys
from bot.storage.lease import RedisLease, keep_alive
from bot.storage.outage import Away, RedisHealth, on_redis
from bot.storage.runs_store import RunsSnapshot, RunsStore

logger = logging.getLogger(__name__)

#: Runs one list call asks for: HSS's largest page, so the newest 200 runs cost one call.
LIST_LIMIT = 200
#: How long a refused list is believed: a permission granted shows within this.
REFUSED_TTL = 300.0
#: A refresh lock's life without renewal (renewed every third of it): a replica that dies
#: mid-call frees the list this fast.
LOCK_TTL = 6.0
#: How often a replica waiting for another's list call looks for its result.
POLL_OTHERS = 0.1
#: A reference is resolved from a snapshot younger than this, else after a refresh. A new
#: run appears once a day (scheduled) or when someone starts one, and the answer names the
#: run it resolved to and when it began, so a person who started a run seconds ago sees if
#: it is not the one; a minute keeps a burst of ``latest`` questions to one call a minute of
#: the tasks budget's five, leaving the rest to ``tasks`` and to following runs.
RESOLVE_MAX_AGE = 60.0

#: A reference that names no run in a list older than this looks at a fresh list first.
RECHECK_AGE = 5.0
#: How long a person waits for a reference to be resolved before being told to try again.
RESOLVE_WAIT = 30.0
#: How long a reference waits for a fresher list when the older one names a run, before the
#: older one answers: within Slack's 3-second ack, as a lookup answers from what the bot
#: knows instead of making people wait on a busy budget (the fresh list still lands).
RESOLVE_PATIENCE = 1.5

#: Task references and the kind of run each names (None: any).
REFERENCES: dict[str, RunKind | None] = {
    "latest": None,
    "latest-auto": RunKind.AUTO,
    "latest-manual": RunKind.MANUAL,
}
REFERENCE_WORDS = ", ".join(f"`{word}`" for word in REFERENCES)
#: What a refused list answers with: the user lacks the API (403), the gateway does not
#: know it (404, ``APIGW.0101``), or it is not offered (405, 501).
_REFUSED_STATUSES = frozenset({403, 404, 405, 501})
_REFUSED_CODES = frozenset({"APIGW.0101", "APIGW.0302", "APIGW.0303"})


def is_reference(word: str) -> bool:
    """``latest``, ``latest-auto`` or ``latest-manual`` (any case)."""
    return word.lower() in REFERENCES


def reference_kind(word: str) -> RunKind | None:
    """The kind of run a reference names (None: any); ``CommandError`` for another word."""
    try:
        return REFERENCES[word.lower()]
    except KeyError:
        raise CommandError(f"Task references are {REFERENCE_WORDS}.") from None


def filter_runs(
    runs: Iterable[SyncRun], *, kind: RunKind | None, name: str | None, failed: bool
) -> tuple[SyncRun, ...]:
    """The runs of ``kind`` (None: any) whose name holds ``name`` (case-insensitive), with
    failures only if ``failed``; order kept."""
    needle = name.casefold() if name else None
    return tuple(
        run
        for run in runs
        if (kind is None or run.kind == kind)
        and (needle is None or needle in run.task_name.casefold())
        and (not failed or run.failed_num > 0)
    )


def refuses_the_list(err: HssError) -> bool:
    """HSS answered that this user cannot list runs here (not: it failed this time)."""
    if isinstance(err, LockedOut):  # the lock-out of another API's failure, not an answer
        return False
    return err.status in _REFUSED_STATUSES or err.error_code in _REFUSED_CODES


def _unavailable(err: HssError) -> RunsUnavailable:
    return RunsUnavailable(
        error_code=err.error_code,
        error_msg=err.error_msg,
        request_id=err.request_id,
        status=err.status,
    )


class RunsService:
    """The runs of one project (and enterprise project) with one HSS client."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        client: HssClient,
        project_id: str,
        ep: str | None,
        clock: Callable[[], float] = time.time,
        refused_ttl: float = REFUSED_TTL,
        lock_ttl: float = LOCK_TTL,
        poll: float = POLL_OTHERS,
        health: RedisHealth | None = None,
    ) -> None:
        self._redis = redis
        self._health = health or RedisHealth()
        self._store = RunsStore(redis)
        self._client = client
        self._project_id = project_id
        self._ep = ep
        self._clock = clock
        self._refused_ttl = refused_ttl
        self._lock_ttl = lock_ttl
        self._poll = poll
        self._inflight: asyncio.Task[RunsSnapshot] | None = None
        # What answers while Redis is away: the newest snapshot this process saw, and the
        # refusal it last met (with when it is forgotten, by ``clock``).
        self._known: RunsSnapshot | None = None
        self._refused_here: tuple[float, RunsUnavailable] | None = None

    async def peek(self) -> RunsSnapshot | None:
        """The stored snapshot (no call); while Redis is away, the newest this process saw."""
        stored = await on_redis(self._health, lambda: self._store.load(self._project_id, self._ep))
        if isinstance(stored, Away):
            return self._known
        self._keep(stored)
        return stored

    def _keep(self, snap: RunsSnapshot | None) -> None:
        if snap is not None and (self._known is None or snap.fetched_at > self._known.fetched_at):
            self._known = snap

    def age(self, snap: RunsSnapshot) -> float:
        return max(0.0, self._clock() - snap.fetched_at)

    async def refused(self) -> RunsUnavailable | None:
        """The remembered refusal of the list, if one is in force (no call)."""
        key = keys.runs_refused(self._project_id, self._ep)
        raw = await on_redis(self._health, lambda: self._redis.get(key))
        if isinstance(raw, Away):
            until, refusal = self._refused_here or (0.0, None)
            return refusal if until > self._clock() else None
        if raw is None:
            return None
        try:
            info: dict[str, Any] = json.loads(raw)
            return RunsUnavailable(
                error_code=str(info["error_code"]),
                error_msg=str(info.get("error_msg", "")),
                request_id=str(info.get("request_id", "")),
                status=int(info.get("status", 0)),
            )
        except (ValueError, TypeError, KeyError):
            return RunsUnavailable(error_code="refused", error_msg="")

    async def refresh(self, *, priority: Priority, max_age: float = 0.0) -> RunsSnapshot:
        """The stored snapshot if younger than ``max_age`` s, else at most ONE list call
        (offset 0, limit 200, no filter) shared by identical refreshes in this process and
        across replicas, through the tasks budget. Raises the ``HssError`` tree; a refused
        list as ``RunsUnavailable``, remembered for ``REFUSED_TTL``."""
        snap = await self.peek()
        if snap is not None and self.age(snap) < max_age:
            return snap
        refused = await self.refused()
        if refused is not None:
            raise refused
        for round_no in (1, 2):
            task = self._inflight
            if task is None:
                task = asyncio.create_task(self._fetch_once(snap, priority))
                task.add_done_callback(_retrieve_exception)
                self._inflight = task
            try:
                return await asyncio.shield(task)
            except TooManyQuestions as exc:
                # Joined a call refused for its asker's share of the queue: not ours to
                # show; the next round asks on our own account.
                if exc.asker == (asker.get() or "") or round_no == 2:
                    raise
        raise AssertionError("unreachable: the second round returns or raises")

    async def resolve(
        self,
        reference: str,
        *,
        priority: Priority,
        max_age: float = RESOLVE_MAX_AGE,
        patience: float | None = RESOLVE_PATIENCE,
    ) -> SyncRun:
        """The newest run a reference names, from a snapshot younger than ``max_age`` s
        (refreshed otherwise; when the older snapshot names a run, the fresher one is waited
        for at most ``patience`` s, None: as long as it takes). ``CommandError`` when HSS
        lists no such run."""
        kind = reference_kind(reference)
        snap = await self.peek()
        if snap is None or self.age(snap) >= max_age:
            snap = await self._fresher(snap, kind, priority, max_age, patience)
        run = latest(snap.runs, kind)
        if run is None and self.age(snap) >= RECHECK_AGE:
            # "None" from a young list may be a manual run started seconds ago, the case
            # a person asking right after starting one is in: look once more.
            snap = await self.refresh(priority=priority, max_age=RECHECK_AGE)
            run = latest(snap.runs, kind)
        if run is None:
            what = "sync runs" if kind is None else f"{kind.value} sync runs"
            raise CommandError(
                f"HSS lists no {what}, so `{reference.lower()}` names no task; "
                "give a task id instead."
            )
        return run

    async def _fresher(
        self,
        older: RunsSnapshot | None,
        kind: RunKind | None,
        priority: Priority,
        max_age: float,
        patience: float | None,
    ) -> RunsSnapshot:
        if older is None or patience is None or latest(older.runs, kind) is None:
            return await self.refresh(priority=priority, max_age=max_age)
        try:
            async with asyncio.timeout(patience):
                return await self.refresh(priority=priority, max_age=max_age)
        except TimeoutError:
            return older  # the call goes on (shared, shielded) and lands for the next one

    async def aclose(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # --- fetching ---

    async def _fetch_once(self, before: RunsSnapshot | None, priority: Priority) -> RunsSnapshot:
        try:
            return await self._locked_fetch(before, priority)
        finally:
            # Leave before waiters wake: whoever comes next starts a new call.
            if self._inflight is asyncio.current_task():
                self._inflight = None

    async def _locked_fetch(self, before: RunsSnapshot | None, priority: Priority) -> RunsSnapshot:
        since = None if before is None else before.fetched_at
        lock = Lock(
            self._redis,
            keys.runs_refresh_lock(self._project_id, self._ep),
            timeout=self._lock_ttl,
            blocking=False,
        )
        while not (taken := await on_redis(self._health, lock.acquire)):
            await asyncio.sleep(self._poll)
            # Another replica is calling: its result (or its refusal) is ours when it lands.
            landed = await self._landed(since)
            if landed is not None:
                return landed
        if isinstance(taken, Away):
            # No replica can share its call while Redis is away: this process's own
            # (``_inflight``) is the only sharing there is.
            return await self._call_and_save(priority)
        landed = await self._landed(since)
        if landed is not None:
            await on_redis(self._health, RedisLease(lock).release)
            return landed
        async with keep_alive(RedisLease(lock)):
            return await self._call_and_save(priority)

    async def _landed(self, since: float | None) -> RunsSnapshot | None:
        refused = await self.refused()
        if refused is not None:
            raise refused
        at = await on_redis(
            self._health, lambda: self._store.fetched_at(self._project_id, self._ep)
        )
        if isinstance(at, Away) or at is None or at == since:
            return None
        return await self.peek()

    async def _call_and_save(self, priority: Priority) -> RunsSnapshot:
        # The priority and the asker (a context variable) are those of the caller that
        # started the call: the others joined it.
        try:
            page = await self._client.list_runs(
                RunFilter(), offset=0, limit=LIST_LIMIT, priority=priority, ep=self._ep
            )
        except HssError as err:
            if not refuses_the_list(err):
                raise
            await self._remember_refusal(err)
            raise _unavailable(err) from err
        snap = RunsSnapshot(runs=newest_first(page.runs), fetched_at=page.sent_at or time.time())
        self._keep(snap)
        await on_redis(self._health, lambda: self._store.save(self._project_id, self._ep, snap))
        stored = await self.peek()
        return stored if stored is not None else snap

    async def _remember_refusal(self, err: HssError) -> None:
        info = {
            "error_code": err.error_code,
            "error_msg": err.error_msg,
            "request_id": err.request_id,
            "status": err.status,
            "at": self._clock(),
        }
        self._refused_here = (self._clock() + self._refused_ttl, _unavailable(err))
        key = keys.runs_refused(self._project_id, self._ep)
        ttl_ms = max(1, int(self._refused_ttl * 1000))
        await on_redis(self._health, lambda: self._redis.set(key, json.dumps(info), px=ttl_ms))
        kind = "permission" if isinstance(err, HssAuthError) else "availability"
        # Info, not warning: every question about runs says it in a sentence already.
        logger.info(
            "HSS refused the run list (%s, %s %s); `latest` and `tasks` are unavailable for "
            "%.0f s, lookups by task id go on",
            kind,
            err.status,
            err.error_code,
            self._refused_ttl,
            extra={"event": "runs_refused", "status": err.status, "error_code": err.error_code},
        )


async def named_run(
    runs: RunsService | None,
    word: str,
    *,
    priority: Priority = Priority.INTERACTIVE,
    max_wait: float = RESOLVE_WAIT,
    patience: float | None = RESOLVE_PATIENCE,
) -> SyncRun | None:
    """The run a task reference names, or None when ``word`` is a plain task id (which needs
    no call). Wherever a task id is accepted, this is how a reference is told from it and
    resolved; every failure is a ``BotError`` sentence."""
    if not is_reference(word):
        return None
    if runs is None:
        raise CommandError(f"{REFERENCE_WORDS} need the run list, which is not set up here.")
    try:
        async with asyncio.timeout(max_wait):
            return await runs.resolve(word, priority=priority, patience=patience)
    except TimeoutError:
        raise CommandError(
            f"Finding the newest run took longer than {max_wait:.0f} s (the run list's call "
            "budget is busy); try again in a minute, or give a task id."
        ) from None


def _retrieve_exception(task: asyncio.Task[RunsSnapshot]) -> None:
    # Retrieved here so that a failure nobody awaited is not logged as lost.
    if not task.cancelled():
        task.exception()
