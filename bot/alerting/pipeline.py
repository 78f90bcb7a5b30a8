"""Alerting: a task's change stream becomes each watching channel's alerts, exactly once.

For every refresh in ``keys.mirror_changes(ref)`` after the task's cursor (entries sharing
``at`` are one refresh), each watch of the task classifies the changes with its filters and
its failure history (:func:`bot.alerting.flips.classify`) and folds them into its channel's
incident:

- failures and no open incident (none yet, or the last one fully resolved): a new incident,
  queued as a ``post``;
- anything about an open incident (more failures, retries, recoveries, removals of its
  registries, flapping): an ``update`` of its message and a ``thread`` line;
- a flapping registry after the incident resolved reopens it in place (thread and update),
  never a new post: that is the point of flapping;
- changes older than the watch (its ``created_at``) are its baseline, not flips; muted and
  paused watches advance their history and open incident silently and never open one.

The cursor, every incident state and the outbox items are written in one ``MULTI`` under
``WATCH`` of the cursor and the states read, so any number of replicas queue each item once:
the loser of a race re-reads and finds the work done.

After that ``MULTI`` the stream is trimmed up to the committed cursor (the cursor's own entry
kept): everything below it has been handled, the cursor only moves forward, and the stream's
ids only grow, so no replica ever trims an entry nobody has handled. A watched task's stream
thus holds what is not alerted yet, not the last 10,000 changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.alerting import outbox
from bot.alerting.flips import (
    AlertPlan,
    Flip,
    FlipKind,
    Incident,
    accumulate,
    classify,
    update_history,
)
from bot.alerting.message import render_alert, render_thread_line
from bot.alerting.state import AlertState, queue_reset, queue_state, read_state
from bot.errors import StoreError
from bot.mirror import Change
from bot.models import LookupRequest, TaskRef
from bot.ops import metrics
from bot.slack.render import Message
from bot.storage import keys
from bot.storage.mirror_store import RedisMirrorStore
from bot.storage.outage import REDIS_OUTAGE, STORE_UNAVAILABLE, OutageGate, class_name
from bot.storage.replies import as_str
from bot.storage.transact import Contended, transact
from bot.storage.watch_store import Watch, WatchStore

logger = logging.getLogger(__name__)

#: XREAD's block, in ms: short, so ``stop`` is honoured quickly, and under the client's
#: 1-second socket timeout (``runtime``), which a longer block would trip.
BLOCK_MS = 500
#: How often the loop re-reads the list of watched tasks, in seconds.
TASKS_EVERY = 5.0
#: How long the loop waits after a failed round (Redis not answering, mostly), in seconds.
RETRY_DELAY = 1.0
#: How far replicas' clocks may disagree, in seconds: an incident opened this much before
#: its watch was created belongs to an earlier watch of the channel.
_CLOCK_SKEW = 60.0

Entry = tuple[str, Change]


# --- the rules, pure --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """What one refresh does to one watch's state: ``post`` a new incident, or tell the open
    one about ``news`` (thread line and update); neither when silent or nothing concerns it."""

    state: AlertState
    post: bool = False
    news: AlertPlan | None = None


def _concerning(plan: AlertPlan, incident: Incident) -> AlertPlan:
    """Failures, and the other flips of registries the incident already shows: a baseline
    failure that recovers is no news to a channel that never heard of it."""
    known = incident.latest.keys()
    return replace(
        plan,
        recoveries=tuple(f for f in plan.recoveries if f.registry_id in known),
        retries=tuple(f for f in plan.retries if f.registry_id in known),
        removed=tuple(f for f in plan.removed if f.registry_id in known),
    )


def advance(state: AlertState, plan: AlertPlan, *, now: float, loud: bool) -> Step:
    """Fold one refresh's ``plan`` (history already updated) into ``state``. ``loud`` is
    False for muted or paused watches: their open incident follows silently, and they never
    open one (there would be no message to update later)."""
    incident = state.incident
    closed = incident is None or incident.resolved
    if closed and (plan.failures or (incident is None and plan.flapping)):
        if not loud:
            return Step(state)
        failures = AlertPlan(
            failures=plan.failures, flapping=plan.flapping, flap_counts=plan.flap_counts
        )
        opened = AlertState(accumulate(Incident(), failures), state.history, None, now)
        return Step(opened, post=True)
    if incident is None:
        return Step(state)
    news = _concerning(plan, incident)
    if incident.resolved:
        news = AlertPlan(flapping=news.flapping, flap_counts=news.flap_counts)
    if news.is_empty:
        return Step(state)
    folded = replace(state, incident=accumulate(incident, news))
    return Step(folded, news=news if loud else None)


def refreshes(entries: Sequence[Entry]) -> list[list[Entry]]:
    """Consecutive entries sharing ``at``: one refresh each (one alert, not one per row)."""
    return [list(group) for _, group in groupby(entries, key=lambda e: e[1].at)]


# --- one round: read, plan (pure), write ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    channel: str
    kind: outbox.Kind
    alert_key: str
    message: Message
    dedup: str


@dataclass(frozen=True, slots=True)
class Writes:
    """What one round writes in one ``MULTI``: the cursor past its entries, the states to
    drop (left by an earlier watch of the channel) and to write, and the outbox items; and
    the flips some watch saw (each once, however many saw it), logged once committed."""

    cursor: str
    dropped: frozenset[str] = frozenset()
    states: Mapping[str, AlertState] = field(default_factory=dict)
    items: Sequence[_Item] = ()
    flips: Sequence[Flip] = ()


def scope_of(watch: Watch) -> LookupRequest:
    """The lookup a watch stands for: its task and filters (alert buttons reuse it)."""
    ref = watch.task
    return LookupRequest(
        task_id=ref.task_id, types=watch.types, name=watch.name, ep=ref.enterprise_project_id
    )


def plan_writes(
    ref: TaskRef,
    watches: Sequence[Watch],
    entries: Sequence[Entry],
    stored: Mapping[str, AlertState],
    *,
    now: float,
) -> Writes:
    """Every refresh in ``entries`` (not empty) through every watch, from each channel's
    ``stored`` state: what to write."""
    dropped = frozenset(
        w.channel for w in watches if _left_by_an_earlier_watch(stored[w.channel], w)
    )
    states = {
        w.channel: AlertState() if w.channel in dropped else stored[w.channel] for w in watches
    }
    changed: set[str] = set()
    items: list[_Item] = []
    flips: dict[tuple[str, float, FlipKind], Flip] = {}
    for refresh in refreshes(entries):
        at, last_id = refresh[0][1].at, refresh[-1][0]
        changes = [c for _, c in refresh]
        for watch in (w for w in watches if at >= w.created_at):  # before: its baseline
            step, plan = _step(watch, states[watch.channel], changes, at, now)
            for flip in plan.in_order():
                flips.setdefault((flip.registry_id, flip.at, flip.kind), flip)
            states[watch.channel] = step.state
            changed.add(watch.channel)
            items += _items(watch, ref, step, last_id, now)
    kept = {c: states[c] for c in sorted(changed)}
    return Writes(entries[-1][0], dropped, kept, items, list(flips.values()))


def _left_by_an_earlier_watch(state: AlertState, watch: Watch) -> bool:
    """Whether an earlier watch of the channel (unwatched since) left ``state``: its message
    is old news, and the new watch starts afresh."""
    return state.opened_at is not None and state.opened_at < watch.created_at - _CLOCK_SKEW


def _step(
    watch: Watch, state: AlertState, changes: list[Change], at: float, now: float
) -> tuple[Step, AlertPlan]:
    incident = state.incident
    plan = classify(
        changes,
        types=watch.types,
        name=watch.name,
        failure_history=state.history,
        retrying=incident.retrying if incident is not None else frozenset(),
        now=at,
    )
    state = replace(state, history=update_history(state.history, plan.all_failures(), at))
    return advance(state, plan, now=now, loud=watch.alerts(now)), plan


def _items(watch: Watch, ref: TaskRef, step: Step, last_id: str, now: float) -> list[_Item]:
    incident = step.state.incident
    if incident is None or (not step.post and step.news is None):
        return []
    alert_key = keys.alert_state(watch.channel, ref)
    parent = render_alert(
        scope_of(watch),
        incident,
        now=now,
        acked_by=step.state.acked_by,
        muted_until=watch.muted_until,
    )

    def item(kind: outbox.Kind, message: Message) -> _Item:
        return _Item(watch.channel, kind, alert_key, message, f"{alert_key}:{last_id}:{kind}")

    if step.post:
        return [item("post", parent)]
    assert step.news is not None
    return [item("update", parent), item("thread", render_thread_line(step.news, now=now))]


async def _queue(pipe: Pipeline, ref: TaskRef, writes: Writes) -> None:
    """Queue ``writes`` in one ``MULTI`` on ``pipe``."""
    pipe.multi()  # type: ignore[no-untyped-call]
    pipe.set(keys.alert_cursor(ref), writes.cursor)
    for channel in sorted(writes.dropped):
        queue_reset(pipe, keys.alert_state(channel, ref))
    for channel, state in writes.states.items():
        queue_state(pipe, keys.alert_state(channel, ref), state)  # a new incident: no ack
    for item in writes.items:
        await outbox.enqueue(
            pipe,
            channel=item.channel,
            kind=item.kind,
            alert_key=item.alert_key,
            text=item.message.text,
            blocks=item.message.blocks,
            dedup=item.dedup,
            task=ref.task_id,
        )


class AlertPipeline:
    """``tasks_every`` and ``retry_delay`` are the loop's pace (seconds): how often it looks
    for newly watched tasks, and how long it waits after a failed round."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        watches: WatchStore,
        clock: Callable[[], float] = time.time,
        tasks_every: float = TASKS_EVERY,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        self._redis = redis
        self._watches = watches
        self._clock = clock
        self._tasks_every = tasks_every
        self._retry_delay = retry_delay
        self._mirror = RedisMirrorStore(redis)
        # The loop retries every second: its outage is logged once, and its end once.
        self._outage = OutageGate(
            logger=logger,
            started="alerting paused, Redis is not answering: %s",
            ended="alerting resumed: Redis answers again",
            detail=str,
        )

    async def run_once(self, ref: TaskRef) -> int:
        """Handle ``ref``'s change-stream entries after its cursor; the number of outbox
        items queued (0 when another replica got there first)."""
        # The task's set of watching channels is WATCHed with the cursor: a watch added or
        # removed while this round reads makes it read again, so no new watch misses the
        # entries this round moves the cursor past.
        watched = [keys.alert_cursor(ref), keys.watch_task(ref)]
        try:
            writes = await transact(self._redis, lambda pipe: self._round(pipe, ref), watch=watched)
        except Contended:
            # Each lost race means another replica made progress: the next wake-up goes on.
            logger.warning("task %s: alert state kept changing; trying again later", ref.task_id)
            return 0
        if writes is None:
            return 0
        _note_flips(ref, writes.flips)  # only now: a lost race re-reads the same entries
        await self._note_alerts(ref, {i.channel for i in writes.items})
        await self._trim(ref, writes.cursor)
        return len(writes.items)

    async def _trim(self, ref: TaskRef, cursor: str) -> None:
        """Forget the entries the committed ``cursor`` has passed; best effort, as a failed
        trim is made good by the next round's."""
        try:
            await self._mirror.trim_changes(ref, before=cursor)
        except REDIS_OUTAGE as exc:
            logger.debug("task %s: change stream not trimmed (%s)", ref.task_id, class_name(exc))

    async def _round(self, pipe: Pipeline, ref: TaskRef) -> Writes | None:
        """Read under ``WATCH``, plan, queue the writes; None when there was nothing new."""
        watches = await self._watches.of_task(ref)
        if watches:
            await pipe.watch(*(keys.alert_state(w.channel, ref) for w in watches))
        cursor = await pipe.get(keys.alert_cursor(ref))
        # Read on another connection: the stream only grows, and the WATCHed cursor is what
        # makes this replica's view of "after the cursor" the one that commits.
        entries = await self._mirror.changes(ref, after=as_str(cursor) if cursor else "0")
        if not entries:
            return None
        stored = {
            w.channel: await read_state(pipe, keys.alert_state(w.channel, ref)) for w in watches
        }
        writes = plan_writes(ref, watches, entries, stored, now=self._clock())
        await _queue(pipe, ref, writes)
        return writes

    async def _note_alerts(self, ref: TaskRef, channels: set[str]) -> None:
        """The App Home's "last alert"; best effort, after the alerts are safely queued."""
        for channel in sorted(channels):
            try:
                await self._watches.note_alert(task=ref, channel=channel, at=self._clock())
            except StoreError:
                logger.warning("could not record the last alert time of channel %s", channel)

    # --- the loop ---

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: wait (``XREAD BLOCK``) for new entries in any watched task's
        stream after its cursor, and :meth:`run_once` each task that has some."""
        tasks: list[TaskRef] = []
        tasks_at = -self._tasks_every
        while not stop.is_set():
            try:
                if time.monotonic() - tasks_at >= self._tasks_every:
                    tasks, tasks_at = await self._watches.watched_tasks(), time.monotonic()
                for ref in await self._ready(tasks):
                    await self.run_once(ref)
                self._outage.succeeded()
            except STORE_UNAVAILABLE as exc:
                # Logged once per outage; the loop retries every ``retry_delay`` (a second).
                self._outage.failed(exc)
                await _wait(stop, self._retry_delay)
            except Exception:
                logger.exception("alerting failed; trying again in a second")
                await _wait(stop, self._retry_delay)

    async def _ready(self, tasks: list[TaskRef]) -> list[TaskRef]:
        """The tasks with entries after their cursor, waiting up to ``BLOCK_MS`` for some."""
        if not tasks:
            await asyncio.sleep(BLOCK_MS / 1000)
            return []
        cursors = await self._redis.mget([keys.alert_cursor(t) for t in tasks])
        streams = {
            keys.mirror_changes(t): as_str(c) if c else "0"
            for t, c in zip(tasks, cursors, strict=True)
        }
        by_stream = {keys.mirror_changes(t): t for t in tasks}
        reply = await self._redis.xread(streams, count=1, block=BLOCK_MS)  # type: ignore[arg-type]
        found = reply.items() if isinstance(reply, dict) else reply or []
        return [by_stream[as_str(stream)] for stream, _ in found]


#: The status a flip of each kind went to (a flip keeps only where it came from).
_NEW_STATUS = {
    FlipKind.FAILURE: "failed",
    FlipKind.RECOVERY: "finished",
    FlipKind.RETRY: "running",
    FlipKind.REMOVED: "removed",
}


def _note_flips(ref: TaskRef, flips: Sequence[Flip]) -> None:
    """One log line and one count per flip."""
    for flip in flips:
        metrics.FLIPS.labels(flip.kind.value).inc()
        new = _NEW_STATUS[flip.kind]
        logger.info(
            "flip task=%r registry %s (%s): %s -> %s",
            ref.task_id,
            flip.registry_id,
            flip.name,
            flip.old or "?",
            new,
            extra={
                "event": "flip",
                "task": ref.task_id,
                "registry_id": flip.registry_id,
                "registry": flip.name,
                "old": flip.old or None,
                "new": new,
                "kind": flip.kind.value,
            },
        )


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
