"""``transact`` on a real Redis: a body overtaken by another client's write runs again from
its reads, and gives up after its attempts with ``Contended``; then what each caller makes of
that (the watch store's sentence, the alerting pipeline's next round, the mirror's re-merge)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.alerting.pipeline import AlertPipeline
from bot.errors import StoreError
from bot.mirror import Change, Snapshot
from bot.models import TaskRef
from bot.storage import keys
from bot.storage.mirror_store import RedisMirrorStore
from bot.storage.transact import ATTEMPTS, Contended, transact
from bot.storage.watch_store import WatchStore
from tests.plugins.redis_server import RedisFactory
from tests.support import Clock

KEY = "hss:test:counter"
TASK = TaskRef(project_id="p", task_id="t1")


class Increment:
    """A body adding one to ``KEY``; before EXEC, the first ``overtaken`` runs see another
    client add ten (a real write on another connection)."""

    def __init__(self, other: aioredis.Redis, overtaken: int) -> None:
        self.other = other
        self.overtaken = overtaken
        self.runs = 0

    async def __call__(self, pipe: Pipeline) -> int:
        self.runs += 1
        value = int(await pipe.get(KEY) or 0)
        if self.runs <= self.overtaken:
            await self.other.incrby(KEY, 10)
        pipe.multi()  # type: ignore[no-untyped-call]
        pipe.set(KEY, value + 1)
        return value + 1


async def test_a_body_overtaken_runs_again_from_its_reads(
    redis: aioredis.Redis, redis_factory: RedisFactory
) -> None:
    body = Increment(redis_factory(), overtaken=2)
    assert await transact(redis, body, watch=[KEY]) == 21
    assert body.runs == 3
    assert await redis.get(KEY) == b"21", "built on both other writes, none lost"


async def test_it_gives_up_after_its_attempts(
    redis: aioredis.Redis, redis_factory: RedisFactory
) -> None:
    body = Increment(redis_factory(), overtaken=1000)
    with pytest.raises(Contended) as info:
        await transact(redis, body, watch=[KEY], attempts=3)
    assert body.runs == 3 and info.value.attempts == 3
    assert isinstance(info.value, StoreError) and "try again" in info.value.user_message()
    assert await redis.get(KEY) == b"30", "only the other client's writes went through"

    body = Increment(redis_factory(), overtaken=1000)
    with pytest.raises(Contended):
        await transact(redis, body, watch=[KEY])
    assert body.runs == ATTEMPTS


async def test_a_key_watched_while_reading_counts_too(
    redis: aioredis.Redis, redis_factory: RedisFactory
) -> None:
    other = redis_factory()
    runs = 0

    async def body(pipe: Pipeline) -> None:
        nonlocal runs
        runs += 1
        await pipe.watch(KEY)  # decided while reading, as the watch store does
        if runs == 1:
            await other.set(KEY, "theirs")
        pipe.multi()  # type: ignore[no-untyped-call]
        pipe.set(KEY, "ours")

    await transact(redis, body)
    assert runs == 2 and await redis.get(KEY) == b"ours"


async def test_a_body_that_writes_nothing_runs_once(redis: aioredis.Redis) -> None:
    await redis.set(KEY, "1")
    runs = 0

    async def body(pipe: Pipeline) -> bytes:
        nonlocal runs
        runs += 1
        return bytes(await pipe.get(KEY))

    assert await transact(redis, body, watch=[KEY]) == b"1"
    assert runs == 1


async def test_at_least_one_attempt(redis: aioredis.Redis) -> None:
    async def body(pipe: Pipeline) -> None:
        raise AssertionError("not run")

    with pytest.raises(ValueError, match="attempt"):
        await transact(redis, body, attempts=0)


# --- the callers --------------------------------------------------------------------------


class _Overtaken(Pipeline):
    before_exec: Callable[[], Awaitable[object]] | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.before_exec is not None and self.explicit_transaction:
            await self.before_exec()
        return await super().execute(raise_on_error)


class AlwaysOvertaken(aioredis.Redis):
    """A client whose every transaction is overtaken: ``before_exec`` writes in between."""

    before_exec: Callable[[], Awaitable[object]] | None = None

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = _Overtaken(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.before_exec = self.before_exec if transaction else None
        return pipe


async def test_the_watch_store_says_try_again(
    redis: aioredis.Redis, redis_factory: RedisFactory
) -> None:
    other = redis_factory()
    overtaken = AlwaysOvertaken(connection_pool=redis.connection_pool)
    overtaken.before_exec = lambda: other.hset(keys.watch_channel("C1"), "x", "y")
    with pytest.raises(StoreError) as info:
        await WatchStore(overtaken).add(task=TASK, channel="C1", created_by="U1")
    assert not isinstance(info.value, Contended)
    assert info.value.user_message() == "Watches are changing too fast to update; try again."


async def test_the_alerting_pipeline_leaves_it_to_its_next_round(
    redis: aioredis.Redis, redis_factory: RedisFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(1_000_000.0)
    await WatchStore(redis, clock=clock).add(task=TASK, channel="C1", created_by="U1")
    clock.now += 60
    fields = {"id": "r1", "name": "n", "type": "Harbor", "old": "running", "new": "failed"}
    await redis.xadd(keys.mirror_changes(TASK), {**fields, "reason": "", "at": repr(clock.now)})
    other = redis_factory()
    overtaken = AlwaysOvertaken(connection_pool=redis.connection_pool)
    overtaken.before_exec = lambda: other.set(keys.alert_cursor(TASK), "0-1")
    pipeline = AlertPipeline(overtaken, watches=WatchStore(redis, clock=clock), clock=clock)
    with caplog.at_level(logging.WARNING, logger="bot.alerting.pipeline"):
        assert await pipeline.run_once(TASK) == 0
    assert "task t1: alert state kept changing; trying again later" in caplog.messages
    assert await redis.xlen(keys.outbox("C1")) == 0

    assert await AlertPipeline(redis, watches=WatchStore(redis), clock=clock).run_once(TASK) == 1


async def test_the_mirror_merges_again_onto_the_winners_snapshot(
    redis: aioredis.Redis, redis_factory: RedisFactory
) -> None:
    ours, theirs = RedisMirrorStore(redis), RedisMirrorStore(redis_factory())
    seen: list[int] = []
    merging = asyncio.Event()

    async def bump(snap: Snapshot) -> tuple[Snapshot, Sequence[Change]]:
        seen.append(snap.generation)
        if len(seen) == 1:
            merging.set()
            await until_saved.wait()  # another replica saves while we merge
        return Snapshot(generation=snap.generation + 1), []

    until_saved = asyncio.Event()
    update = asyncio.create_task(ours.update(TASK, bump))
    await merging.wait()
    assert await theirs.save(TASK, Snapshot(generation=5), [], expected=0)
    until_saved.set()
    new, _ = await update
    assert seen == [0, 5], "merged again onto the winner's snapshot"
    assert new.generation == 6
    assert await theirs.generation(TASK) == 6
