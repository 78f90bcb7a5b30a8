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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

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
from bot.errors import StoreError
from bot.mirror import Change
from bot.models import LookupRequest, TaskRef
from bot.ops import metrics
from bot.slack.render import Message
from bot.storage import keys
from bot.storage.mirror_store import RedisMirrorStore
from bot.storage.outage import REDIS_OUTAGE
from bot.storage.watch_store import Watch, WatchStore

logger = logging.getLogger(__name__)

#: XREAD's block, in ms: short, so ``stop`` is honoured quickly, and under the client's
#: 1-second socket timeout (``runtime``), which a longer block would trip.
BLOCK_MS = 500
#: How often the loop re-reads the list of watched tasks, in seconds.
TASKS_EVERY = 5.0
#: How long the loop waits after a failed round (Redis not answering, mostly), in seconds.
RETRY_DELAY = 1.0
#: Each lost race means another replica made progress; give up (until the next wake-up)
#: after this many in a row.
_MAX_ATTEMPTS = 50

#: How far replicas' clocks may disagree, in seconds: an incident opened this much before
#: its watch was created belongs to an earlier watch of the channel.
_CLOCK_SKEW = 60.0
#: What makes the loop wait a second and go on: Redis not answering, mostly.
_LOOP_ERRORS: tuple[type[BaseException], ...] = (*REDIS_OUTAGE, StoreError)

Entry = tuple[str, Change]


# --- state, and its JSON ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertState:
    """One channel's alert for one task: the incident its message shows (None before the
    first), the failure times that count for flapping, who acknowledged, when it opened."""

    incident: Incident | None = None
    history: Mapping[str, Sequence[float]] = field(default_factory=dict)
    acked_by: str | None = None
    opened_at: float | None = None


def _flip_row(f: Flip) -> list[object]:
    return [f.kind.value, f.registry_id, f.name, f.type, f.reason, f.at, f.old]


def _flip_of(row: Sequence[Any]) -> Flip:
    kind, rid, name, rtype, reason, at, old = row
    return Flip(FlipKind(kind), str(rid), str(name), str(rtype), str(reason), float(at), str(old))


def encode_incident(incident: Incident) -> str:
    latest = [_flip_row(f) for _, f in sorted(incident.latest.items())]
    doc = {"v": 1, "latest": latest, "flapping": sorted(incident.flapping)}
    return json.dumps(doc, separators=(",", ":"))


def decode_incident(raw: bytes | str) -> Incident:
    doc = json.loads(raw)
    flips = (_flip_of(d) for d in doc["latest"])
    return Incident(latest={f.registry_id: f for f in flips}, flapping=frozenset(doc["flapping"]))


def encode_history(history: Mapping[str, Sequence[float]]) -> str:
    return json.dumps({rid: list(t) for rid, t in sorted(history.items())}, separators=(",", ":"))


def decode_history(raw: bytes | str) -> dict[str, list[float]]:
    return {str(rid): [float(t) for t in times] for rid, times in json.loads(raw).items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def decode_state(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> AlertState:
    """The stored state, or a fresh one (logged) if it cannot be read."""
    d = {_text(k): _text(v) for k, v in fields.items()}
    try:
        return AlertState(
            incident=decode_incident(d["incident"]) if "incident" in d else None,
            history=decode_history(d["history"]) if "history" in d else {},
            acked_by=d.get("acked_by") or None,
            opened_at=float(d["opened_at"]) if "opened_at" in d else None,
        )
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable alert state; starting a new one")
        return AlertState()


def _state_fields(state: AlertState) -> dict[str, str]:
    out = {"history": encode_history(state.history)}
    if state.incident is not None:
        out["incident"] = encode_incident(state.incident)
    if state.opened_at is not None:
        out["opened_at"] = repr(state.opened_at)
    return out


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


# --- the pipeline -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    channel: str
    kind: outbox.Kind
    alert_key: str
    message: Message
    dedup: str


def scope_of(watch: Watch) -> LookupRequest:
    """The lookup a watch stands for: its task and filters (alert buttons reuse it)."""
    ref = watch.task
    return LookupRequest(
        task_id=ref.task_id, types=watch.types, name=watch.name, ep=ref.enterprise_project_id
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

    async def run_once(self, ref: TaskRef) -> int:
        """Handle ``ref``'s change-stream entries after its cursor; the number of outbox
        items queued (0 when another replica got there first)."""
        watches = await self._watches.of_task(ref)
        for _ in range(_MAX_ATTEMPTS):
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    return await self._attempt(pipe, ref, watches)
            except WatchError:
                continue
        logger.warning("task %s: alert state kept changing; trying again later", ref.task_id)
        return 0

    async def _attempt(self, pipe: Pipeline, ref: TaskRef, watches: list[Watch]) -> int:
        cursor_key = keys.alert_cursor(ref)
        state_keys = {w.channel: keys.alert_state(w.channel, ref) for w in watches}
        await pipe.watch(cursor_key, *state_keys.values())
        cursor = await pipe.get(cursor_key)
        # Read on another connection: the stream only grows, and the WATCHed cursor is what
        # makes this replica's view of "after the cursor" the one that commits.
        entries = await self._mirror.changes(ref, after=_text(cursor) if cursor else "0")
        if not entries:
            return 0
        stored = {w.channel: await self._state(pipe, state_keys[w.channel], w) for w in watches}
        states = {channel: state or AlertState() for channel, state in stored.items()}
        items, changed, reopened, flips = self._process(ref, watches, states, entries)
        pipe.multi()  # type: ignore[no-untyped-call]
        pipe.set(cursor_key, entries[-1][0])
        for channel in (c for c, state in stored.items() if state is None):
            pipe.delete(state_keys[channel])
        for channel in changed:
            pipe.hset(state_keys[channel], mapping=_state_fields(states[channel]))  # type: ignore[arg-type]
        for channel in reopened:
            pipe.hdel(state_keys[channel], "acked_by")
        for item in items:
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
        await pipe.execute()
        _note_flips(ref, flips)  # only now: a lost race re-reads the same entries
        await self._note_alerts(ref, {i.channel for i in items})
        return len(items)

    async def _state(self, pipe: Pipeline, key: str, watch: Watch) -> AlertState | None:
        """The stored state; None if an earlier watch of the channel (unwatched since) left
        it: its message is old news, the new watch starts afresh."""
        state = decode_state(cast("dict[bytes, bytes]", await pipe.hgetall(key)))
        if state.opened_at is not None and state.opened_at < watch.created_at - _CLOCK_SKEW:
            return None
        return state

    def _process(
        self,
        ref: TaskRef,
        watches: list[Watch],
        states: dict[str, AlertState],
        entries: list[Entry],
    ) -> tuple[list[_Item], set[str], set[str], list[Flip]]:
        """Every refresh through every watch, updating ``states`` in place; the items, the
        channels whose state changed, those that opened a new incident, and the flips some
        watch saw (each once, however many watches saw it)."""
        items: list[_Item] = []
        changed: set[str] = set()
        reopened: set[str] = set()
        flips: dict[tuple[str, float, FlipKind], Flip] = {}
        now = self._clock()
        for refresh in refreshes(entries):
            at, last_id = refresh[0][1].at, refresh[-1][0]
            changes = [c for _, c in refresh]
            for watch in watches:
                if at < watch.created_at:
                    continue  # the watch's baseline
                step, plan = self._step(watch, states[watch.channel], changes, at, now)
                for flip in plan.in_order():
                    flips.setdefault((flip.registry_id, flip.at, flip.kind), flip)
                states[watch.channel] = step.state
                changed.add(watch.channel)
                if step.post:
                    reopened.add(watch.channel)
                items += self._items(watch, ref, step, last_id, now)
        return items, changed, reopened, list(flips.values())

    def _step(
        self, watch: Watch, state: AlertState, changes: list[Change], at: float, now: float
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

    @staticmethod
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
        redis_down = False
        while not stop.is_set():
            try:
                if time.monotonic() - tasks_at >= self._tasks_every:
                    tasks, tasks_at = await self._watches.watched_tasks(), time.monotonic()
                for ref in await self._ready(tasks):
                    await self.run_once(ref)
                if redis_down:
                    redis_down = False
                    logger.info("alerting resumed: Redis answers again")
            except _LOOP_ERRORS as exc:
                # Once per outage: the loop retries every ``retry_delay`` (a second).
                if not redis_down:
                    logger.warning("alerting paused, Redis is not answering: %s", exc)
                redis_down = True
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
            keys.mirror_changes(t): _text(c) if c else "0"
            for t, c in zip(tasks, cursors, strict=True)
        }
        by_stream = {keys.mirror_changes(t): t for t in tasks}
        reply = await self._redis.xread(streams, count=1, block=BLOCK_MS)  # type: ignore[arg-type]
        found = reply.items() if isinstance(reply, dict) else reply or []
        return [by_stream[_text(stream)] for stream, _ in found]


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
