"""Watches: which Slack channels hear about which task's flips, kept in Redis.

Everything lives in Redis (key layout in :mod:`bot.storage.keys`, ``watch_*``), so any replica may
serve any command and a restart forgets nothing. A channel watches a task id at most once:
the watch is identified by ``(channel, project_id, task_id)``, and the enterprise project is
a property of it, like the filters. Every change reads under ``WATCH`` and writes the record
and its indexes in one ``MULTI``, retried when another client got there first, so the
indexes never disagree with the records.

Pause and mute work as for every watch (:mod:`bot.storage.channel_watches`); neither takes
the task out of :meth:`WatchStore.watched_tasks`, so its mirror stays current.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.models import TaskRef
from bot.storage import keys
from bot.storage.channel_watches import (
    ChannelRecords,
    ChannelWatch,
    outage,
)
from bot.storage.replies import as_str

logger = logging.getLogger(__name__)

#: Slack errors after which a channel cannot take our messages until people fix something.
PAUSE_REASONS = frozenset({"channel_not_found", "is_archived", "not_in_channel", "token_revoked"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Watch(ChannelWatch):
    """One channel's subscription to one task's flips."""

    task: TaskRef
    last_alert_at: float | None = None


def may_change_watches(user_id: str, user_groups: AbstractSet[str], admins: frozenset[str]) -> bool:
    """Anyone may, unless admins are configured: then only they or members of their groups."""
    return not admins or user_id in admins or not admins.isdisjoint(user_groups)


# --- encoding ---


def _field(task: TaskRef) -> str:
    return f"{quote(task.project_id, safe='')}:{quote(task.task_id, safe='')}"


def _task_member(task: TaskRef) -> str:
    return json.dumps([task.project_id, task.task_id, task.enterprise_project_id])


def _task_of_member(raw: bytes | str) -> TaskRef:
    project_id, task_id, ep = json.loads(raw)
    return TaskRef(project_id=project_id, task_id=task_id, enterprise_project_id=ep)


def _fields(watch: Watch) -> dict[str, Any]:
    task = watch.task
    return {
        "project_id": task.project_id,
        "task_id": task.task_id,
        "ep": task.enterprise_project_id,
        "last_alert_at": watch.last_alert_at,
    }


def _arguments(d: dict[str, Any]) -> dict[str, Any]:
    task = TaskRef(project_id=d["project_id"], task_id=d["task_id"], enterprise_project_id=d["ep"])
    return {"task": task, "last_alert_at": d["last_alert_at"]}


# --- the store ---


class WatchStore:
    def __init__(self, redis: aioredis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock
        self._records = ChannelRecords[Watch](
            redis,
            kind=Watch,
            key=keys.watch_channel,
            fields=_fields,
            arguments=_arguments,
            order=lambda w: _task_order(w.task),
        )

    # --- changes ---

    async def add(
        self,
        *,
        task: TaskRef,
        channel: str,
        created_by: str,
        types: frozenset[str] = frozenset(),
        name: str | None = None,
    ) -> tuple[Watch, bool]:
        """Watch ``task`` in ``channel``; True if new. Watching again replaces the filters and
        the ep, clears a pause (the caller checked the bot can post there) and keeps the
        creator, the mute and the last alert time."""
        chan_key = keys.watch_channel(channel)

        async def body(pipe: Pipeline) -> tuple[Watch, bool]:
            old = await self._records.read(pipe, channel, _field(task))
            moved_from = old.task if old is not None and old.task != task else None
            old_channels = await self._channels_of(pipe, moved_from)
            new = Watch(
                task=task,
                channel=channel,
                types=types,
                name=name,
                created_by=old.created_by if old else created_by,
                created_at=old.created_at if old else self._clock(),
                muted_until=old.muted_until if old else None,
                last_alert_at=old.last_alert_at if old else None,
            )
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(chan_key, _field(task), self._records.encode(new))
            pipe.sadd(keys.watch_task(task), channel)
            pipe.sadd(keys.watched_tasks(), _task_member(task))
            pipe.sadd(keys.watch_channels(), channel)
            if moved_from is not None:
                self._unindex(pipe, moved_from, channel, old_channels)
            return new, old is None

        return await self._records.transact([chan_key, keys.watch_task(task)], body)

    async def remove(self, *, task: TaskRef, channel: str) -> Watch | None:
        """Stop watching ``task`` (any ep) in ``channel``; the removed watch, or None."""
        chan_key = keys.watch_channel(channel)

        async def body(pipe: Pipeline) -> Watch | None:
            old = await self._records.read(pipe, channel, _field(task))
            if old is None:
                return None
            old_channels = await self._channels_of(pipe, old.task)
            left = int(await pipe.hlen(chan_key))
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hdel(chan_key, _field(task))
            self._unindex(pipe, old.task, channel, old_channels)
            if left <= 1:
                pipe.srem(keys.watch_channels(), channel)
            return old

        return await self._records.transact([chan_key], body)

    async def pause(self, channel: str, reason: str) -> list[Watch]:
        """Pause every watch of ``channel`` with Slack's ``reason``; the paused watches.
        A watch already paused keeps the time it was first paused."""
        return await self._records.pause(channel, reason, self._clock())

    async def resume(self, channel: str) -> list[Watch]:
        return await self._records.resume(channel)

    async def mute(self, *, task: TaskRef, channel: str, until: float) -> Watch | None:
        """Silence until ``until`` (the latest mute wins, so a mute can be shortened);
        None if the channel does not watch the task."""
        return await self._records.modify(
            channel, _field(task), lambda w: replace(w, muted_until=until)
        )

    async def unmute(self, *, task: TaskRef, channel: str) -> Watch | None:
        return await self._records.modify(
            channel, _field(task), lambda w: replace(w, muted_until=None)
        )

    async def note_alert(self, *, task: TaskRef, channel: str, at: float) -> Watch | None:
        """Record that an alert went out (shown in the App Home); never moves backwards."""
        return await self._records.modify(
            channel,
            _field(task),
            lambda w: replace(w, last_alert_at=max(at, w.last_alert_at or at)),
        )

    async def _channels_of(self, pipe: Pipeline, task: TaskRef | None) -> set[str]:
        """WATCH ``task``'s channel set and read it (to know whether it is about to empty)."""
        if task is None:
            return set()
        await pipe.watch(keys.watch_task(task))
        return {as_str(c) for c in await pipe.smembers(keys.watch_task(task))}

    @staticmethod
    def _unindex(pipe: Pipeline, task: TaskRef, channel: str, channels: set[str]) -> None:
        pipe.srem(keys.watch_task(task), channel)
        if channels <= {channel}:
            pipe.srem(keys.watched_tasks(), _task_member(task))

    # --- reads ---

    async def get(self, *, task: TaskRef, channel: str) -> Watch | None:
        return await self._records.get(channel, _field(task))

    async def of_channel(self, channel: str) -> list[Watch]:
        return await self._records.of_channel(channel)

    async def of_task(self, task: TaskRef) -> list[Watch]:
        """Every channel's watch of exactly this task (project, ep and task id)."""
        with outage():
            channels = sorted(as_str(c) for c in await self._redis.smembers(keys.watch_task(task)))
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel in channels:
                    pipe.hget(keys.watch_channel(channel), _field(task))
                raws = await pipe.execute()
        decode = self._records.decode
        found = (decode(c, r) for c, r in zip(channels, raws, strict=True) if r is not None)
        return [w for w in found if w is not None and w.task == task]

    async def recipients(self, task: TaskRef, now: float) -> list[Watch]:
        """The watches of ``task`` that should hear of a flip seen at ``now``."""
        return [w for w in await self.of_task(task) if w.alerts(now)]

    async def channels(self) -> list[str]:
        with outage():
            return sorted(as_str(c) for c in await self._redis.smembers(keys.watch_channels()))

    async def all(self) -> list[Watch]:
        """Every channel's watches, by channel then task id."""
        return await self._records.of_channels(await self.channels())

    async def watched_tasks(self) -> list[TaskRef]:
        """Every task at least one channel watches (paused and muted ones included)."""
        with outage():
            members = await self._redis.smembers(keys.watched_tasks())
        return sorted((_task_of_member(m) for m in members), key=_task_order)


def _task_order(t: TaskRef) -> tuple[str, str, str]:
    return (t.task_id, t.project_id, t.enterprise_project_id or "")
