"""Run watches: which Slack channels follow every new sync run of a kind, kept in Redis.

HSS makes every scheduled sync a new task with a new id, so a task watch hears nothing of
tonight's run. A run watch follows runs instead: every run of its kind (auto, manual, or
``None`` for all) that began after the watch was made; the runs that existed then are its
baseline. A channel has at most one run watch per kind, identified by ``(channel, kind)``.

Keys in :mod:`bot.storage.keys` (``run_watch_*``); records, pause and mute as for every watch
(:mod:`bot.storage.channel_watches`). Every change reads under ``WATCH`` and writes the record
and the channel index in one ``MULTI``, so the index never disagrees with the records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.runs import RunKind
from bot.storage import keys
from bot.storage.channel_watches import (
    ChannelRecords,
    ChannelWatch,
    outage,
)
from bot.storage.replies import as_str

#: The field of a watch of every run (a ``RunKind`` value is the field of the others).
ALL_RUNS = "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunWatch(ChannelWatch):
    """One channel following every new run of ``kind`` (None: of any kind). Runs that began
    before ``created_at`` are the baseline, not alerts."""

    kind: RunKind | None


def _field(kind: RunKind | None) -> str:
    return kind.value if kind is not None else ALL_RUNS


def _kind_order(watch: RunWatch) -> int:
    """All runs first, then auto, then manual: the order ``watches`` lists them in."""
    return (None, RunKind.AUTO, RunKind.MANUAL).index(watch.kind)


def _fields(watch: RunWatch) -> dict[str, Any]:
    return {"kind": _field(watch.kind)}


def _arguments(d: dict[str, Any]) -> dict[str, Any]:
    return {"kind": None if d["kind"] == ALL_RUNS else RunKind(d["kind"])}


class RunWatchStore:
    def __init__(self, redis: aioredis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock
        self._records = ChannelRecords[RunWatch](
            redis,
            kind=RunWatch,
            key=keys.run_watch_channel,
            fields=_fields,
            arguments=_arguments,
            order=_kind_order,
        )

    # --- changes ---

    async def add(self, watch: RunWatch) -> tuple[RunWatch, bool]:
        """Store ``watch``; True if the channel did not follow runs of that kind yet.
        Watching again replaces the filters, clears a pause (the caller checked the bot can
        post there) and keeps the creator, the mute and ``created_at``: the baseline stays
        the one the first watch set, so no run is skipped or replayed."""
        channel = watch.channel
        chan_key = keys.run_watch_channel(channel)

        async def body(pipe: Pipeline) -> tuple[RunWatch, bool]:
            old = await self._records.read(pipe, channel, _field(watch.kind))
            new = replace(watch, paused_reason=None, paused_at=None)
            if old is not None:
                new = replace(
                    new,
                    created_by=old.created_by,
                    created_at=old.created_at,
                    muted_until=old.muted_until,
                )
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(chan_key, _field(watch.kind), self._records.encode(new))
            pipe.sadd(keys.run_watch_channels(), channel)
            return new, old is None

        return await self._records.transact([chan_key], body)

    async def remove(self, *, channel: str, kind: RunKind | None) -> RunWatch | None:
        """Stop following runs of ``kind`` in ``channel``; the removed watch, or None."""
        chan_key = keys.run_watch_channel(channel)

        async def body(pipe: Pipeline) -> RunWatch | None:
            old = await self._records.read(pipe, channel, _field(kind))
            if old is None:
                return None
            left = int(await pipe.hlen(chan_key))
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hdel(chan_key, _field(kind))
            if left <= 1:
                pipe.srem(keys.run_watch_channels(), channel)
            return old

        return await self._records.transact([chan_key], body)

    async def mute(self, *, channel: str, kind: RunKind | None, until: float) -> RunWatch | None:
        """Silence until ``until`` (the latest mute wins, so a mute can be shortened);
        None if the channel does not follow runs of ``kind``."""
        return await self._records.modify(
            channel, _field(kind), lambda w: replace(w, muted_until=until)
        )

    async def unmute(self, *, channel: str, kind: RunKind | None) -> RunWatch | None:
        return await self._records.modify(
            channel, _field(kind), lambda w: replace(w, muted_until=None)
        )

    async def pause(self, channel: str, reason: str) -> list[RunWatch]:
        """Pause every run watch of ``channel`` with Slack's ``reason``; the paused watches.
        A watch already paused keeps the time it was first paused."""
        return await self._records.pause(channel, reason, self._clock())

    async def resume(self, channel: str) -> list[RunWatch]:
        return await self._records.resume(channel)

    # --- reads ---

    @staticmethod
    def key(channel: str) -> str:
        """The key that changes whenever a run watch of ``channel`` does (to ``WATCH``)."""
        return keys.run_watch_channel(channel)

    async def read(self, pipe: Pipeline, *, channel: str, kind: RunKind | None) -> RunWatch | None:
        """The watch as it stands now, read through ``pipe`` (under its ``WATCH`` of
        :meth:`key`): what a write made from an older read must check first."""
        return await self._records.read(pipe, channel, _field(kind))

    async def get(self, *, channel: str, kind: RunKind | None) -> RunWatch | None:
        return await self._records.get(channel, _field(kind))

    async def of_channel(self, channel: str) -> list[RunWatch]:
        """The channel's run watches: all runs, then auto, then manual."""
        return await self._records.of_channel(channel)

    async def channels(self) -> list[str]:
        """Every channel with at least one run watch."""
        with outage():
            members = await self._redis.smembers(keys.run_watch_channels())
        return sorted(as_str(c) for c in members)

    async def all(self) -> list[RunWatch]:
        """Every run watch (paused and muted ones included), by channel then kind."""
        return await self._records.of_channels(await self.channels())
