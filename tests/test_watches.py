"""The watch store on a real Redis: records and indexes change together, whatever the order
or concurrency of callers, and everything survives a new process (a new store and client)."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from bot.errors import StoreError
from bot.models import TaskRef
from bot.storage import keys
from bot.storage.watch_store import Watch, WatchStore, may_change_watches
from tests.plugins.redis_server import RedisFactory
from tests.support import Clock

T1 = TaskRef(project_id="p", task_id="t1")
T2 = TaskRef(project_id="p", task_id="t2")
T1_EP0 = TaskRef(project_id="p", task_id="t1", enterprise_project_id="0")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis: aioredis.Redis, clock: Clock) -> WatchStore:
    return WatchStore(redis, clock=clock)


async def assert_indexes_match_records(store: WatchStore, redis: aioredis.Redis) -> None:
    """The indexes say exactly what the records say."""
    watches = await store.all()
    assert await store.channels() == sorted({w.channel for w in watches})
    tasks = {w.task for w in watches}
    assert set(await store.watched_tasks()) == tasks
    for task in tasks:
        assert {w.channel for w in await store.of_task(task)} == {
            w.channel for w in watches if w.task == task
        }
    if not watches:
        assert await redis.keys("*") == []


# --- add, list, remove -----------------------------------------------------------------------


async def test_add_list_remove(store: WatchStore, redis: aioredis.Redis) -> None:
    watch, created = await store.add(
        task=T1, channel="C1", created_by="U1", types=frozenset({"Harbor"}), name="prod"
    )
    assert created
    assert watch == Watch(
        task=T1,
        channel="C1",
        types=frozenset({"Harbor"}),
        name="prod",
        created_by="U1",
        created_at=1000.0,
    )
    assert await store.of_channel("C1") == [watch]
    assert await store.of_task(T1) == [watch]
    assert await store.get(task=T1, channel="C1") == watch
    assert await store.watched_tasks() == [T1]
    assert await store.channels() == ["C1"]
    assert await store.all() == [watch]

    assert await store.remove(task=T1, channel="C1") == watch
    assert await store.remove(task=T1, channel="C1") is None
    assert await store.of_channel("C1") == []
    assert await store.of_task(T1) == []
    assert await store.get(task=T1, channel="C1") is None
    await assert_indexes_match_records(store, redis)  # and nothing is left behind


async def test_key_layout(store: WatchStore, redis: aioredis.Redis) -> None:
    await store.add(task=T1_EP0, channel="C1", created_by="U1")
    assert sorted(await redis.keys("*")) == sorted(
        k.encode()
        for k in (
            keys.watch_channel("C1"),
            keys.watch_task(T1_EP0),
            keys.watched_tasks(),
            keys.watch_channels(),
        )
    )
    assert await redis.hkeys(keys.watch_channel("C1")) == [b"p:t1"]
    assert await redis.smembers(keys.watched_tasks()) == {b'["p", "t1", "0"]'}
    assert keys.watch_channel("C1") == "hss:watch:channel:C1"
    assert keys.watch_task(T1_EP0) == "hss:watch:task:p:0:t1"


async def test_watching_again_updates_and_does_not_duplicate(
    store: WatchStore, redis: aioredis.Redis, clock: Clock
) -> None:
    first, created = await store.add(task=T1, channel="C1", created_by="U1", name="a")
    await store.mute(task=T1, channel="C1", until=5000.0)
    await store.note_alert(task=T1, channel="C1", at=1500.0)
    clock.now = 2000.0
    again, created_again = await store.add(
        task=T1, channel="C1", created_by="U2", types=frozenset({"Jfrog"})
    )
    assert created and not created_again
    assert (again.types, again.name) == (frozenset({"Jfrog"}), None)
    # The creator, the mute and the alert history belong to the watch, not to the command.
    assert (again.created_by, again.created_at) == ("U1", first.created_at)
    assert (again.muted_until, again.last_alert_at) == (5000.0, 1500.0)
    assert await store.of_channel("C1") == [again]
    assert await redis.hlen(keys.watch_channel("C1")) == 1
    await assert_indexes_match_records(store, redis)


async def test_watching_with_another_ep_moves_the_watch(
    store: WatchStore, redis: aioredis.Redis
) -> None:
    await store.add(task=T1, channel="C1", created_by="U1")
    await store.add(task=T1, channel="C2", created_by="U1")
    moved, created = await store.add(task=T1_EP0, channel="C1", created_by="U1")
    assert not created
    assert await store.of_channel("C1") == [moved]
    assert [w.channel for w in await store.of_task(T1)] == ["C2"]
    assert [w.channel for w in await store.of_task(T1_EP0)] == ["C1"]
    assert set(await store.watched_tasks()) == {T1, T1_EP0}
    # Unwatch names the task id only: it removes the watch whatever its ep.
    assert await store.remove(task=T1, channel="C1") == moved
    assert await store.watched_tasks() == [T1]
    await assert_indexes_match_records(store, redis)


async def test_channel_and_task_listings(store: WatchStore, redis: aioredis.Redis) -> None:
    for task, channel in [(T2, "C1"), (T1, "C1"), (T1, "C2")]:
        await store.add(task=task, channel=channel, created_by="U1")
    assert [w.task for w in await store.of_channel("C1")] == [T1, T2]
    assert [w.task for w in await store.of_channel("C2")] == [T1]
    assert [w.channel for w in await store.of_task(T1)] == ["C1", "C2"]
    assert [w.channel for w in await store.of_task(T2)] == ["C1"]
    assert await store.of_task(T1_EP0) == []  # another ep is another task to refresh
    assert [(w.channel, w.task) for w in await store.all()] == [
        ("C1", T1),
        ("C1", T2),
        ("C2", T1),
    ]
    assert await store.watched_tasks() == [T1, T2]
    assert await store.channels() == ["C1", "C2"]

    await store.remove(task=T1, channel="C1")
    assert await store.watched_tasks() == [T1, T2]  # C2 still watches t1
    await store.remove(task=T1, channel="C2")
    assert await store.watched_tasks() == [T2]
    assert await store.channels() == ["C1"]
    await assert_indexes_match_records(store, redis)


async def test_unreadable_record_does_not_hide_the_others(
    store: WatchStore, redis: aioredis.Redis
) -> None:
    await store.add(task=T1, channel="C1", created_by="U1")
    await redis.hset(keys.watch_channel("C1"), "p:junk", b"{not json")
    assert [w.task for w in await store.of_channel("C1")] == [T1]
    assert [w.task for w in await store.pause("C1", "is_archived")] == [T1]


async def test_everything_survives_a_new_process(
    store: WatchStore, redis_factory: RedisFactory, clock: Clock
) -> None:
    await store.add(task=T1, channel="C1", created_by="U1", name="n")
    await store.mute(task=T1, channel="C1", until=9000.0)
    await store.add(task=T2, channel="C2", created_by="U1")
    await store.pause("C2", "not_in_channel")
    before = await store.all()
    restarted = WatchStore(redis_factory(), clock=clock)
    assert await restarted.all() == before
    assert await restarted.watched_tasks() == [T1, T2]


# --- pause and resume ------------------------------------------------------------------------


async def test_pause_and_resume_a_channel(store: WatchStore, clock: Clock) -> None:
    await store.add(task=T1, channel="C1", created_by="U1")
    await store.add(task=T2, channel="C1", created_by="U1")
    await store.add(task=T1, channel="C2", created_by="U1")
    clock.now = 1100.0
    paused = await store.pause("C1", "is_archived")
    assert [(w.task, w.paused_reason, w.paused_at) for w in paused] == [
        (T1, "is_archived", 1100.0),
        (T2, "is_archived", 1100.0),
    ]
    assert all(w.paused and not w.alerts(1100.0) for w in await store.of_channel("C1"))
    assert not any(w.paused for w in await store.of_channel("C2"))
    assert [w.channel for w in await store.recipients(T1, 1100.0)] == ["C2"]
    # Paused watches are still watched: the mirror stays current for when they resume.
    assert await store.watched_tasks() == [T1, T2]

    clock.now = 1200.0
    again = await store.pause("C1", "channel_not_found")
    assert {(w.paused_reason, w.paused_at) for w in again} == {("channel_not_found", 1100.0)}

    resumed = await store.resume("C1")
    assert [(w.paused_reason, w.paused_at) for w in resumed] == [(None, None)] * 2
    assert [w.channel for w in await store.recipients(T1, 1200.0)] == ["C1", "C2"]
    assert await store.pause("C-none", "is_archived") == []
    with pytest.raises(ValueError):
        await store.pause("C1", "")


async def test_watching_again_resumes_that_watch(store: WatchStore) -> None:
    await store.add(task=T1, channel="C1", created_by="U1")
    await store.add(task=T2, channel="C1", created_by="U1")
    await store.pause("C1", "not_in_channel")
    watch, _ = await store.add(task=T1, channel="C1", created_by="U1")
    assert not watch.paused
    assert [w.paused_reason for w in await store.of_channel("C1")] == [None, "not_in_channel"]


# --- mute ------------------------------------------------------------------------------------


async def test_mute_expires_by_itself(store: WatchStore) -> None:
    await store.add(task=T1, channel="C1", created_by="U1")
    await store.add(task=T1, channel="C2", created_by="U1")
    muted = await store.mute(task=T1, channel="C1", until=4600.0)
    assert muted is not None and muted.muted_until == 4600.0
    assert muted.muted(4599.9) and not muted.alerts(4599.9)
    assert not muted.muted(4600.0) and muted.alerts(4600.0)  # until is exclusive
    assert [w.channel for w in await store.recipients(T1, 2000.0)] == ["C2"]
    assert [w.channel for w in await store.recipients(T1, 4600.0)] == ["C1", "C2"]


async def test_latest_mute_wins_and_unmute_clears(store: WatchStore) -> None:
    await store.add(task=T1, channel="C1", created_by="U1")
    await store.mute(task=T1, channel="C1", until=90_000.0)
    shorter = await store.mute(task=T1_EP0, channel="C1", until=5000.0)  # ep is not identity
    assert shorter is not None and shorter.muted_until == 5000.0
    unmuted = await store.unmute(task=T1, channel="C1")
    assert unmuted is not None and unmuted.muted_until is None
    assert (await store.of_channel("C1"))[0].alerts(1000.0)


async def test_changing_what_is_not_watched_changes_nothing(
    store: WatchStore, redis: aioredis.Redis
) -> None:
    assert await store.mute(task=T1, channel="C1", until=5000.0) is None
    assert await store.unmute(task=T1, channel="C1") is None
    assert await store.note_alert(task=T1, channel="C1", at=5000.0) is None
    assert await store.remove(task=T1, channel="C1") is None
    assert await redis.keys("*") == []


async def test_last_alert_never_moves_backwards(store: WatchStore) -> None:
    await store.add(task=T1, channel="C1", created_by="U1")
    await store.note_alert(task=T1, channel="C1", at=3000.0)
    late = await store.note_alert(task=T1, channel="C1", at=2000.0)  # a slow replica
    assert late is not None and late.last_alert_at == 3000.0


# --- concurrency -----------------------------------------------------------------------------


async def test_concurrent_changes_from_two_connections(
    redis: aioredis.Redis, redis_factory: RedisFactory, clock: Clock
) -> None:
    a = WatchStore(redis_factory(), clock=clock)
    b = WatchStore(redis_factory(), clock=clock)
    tasks = [TaskRef(project_id="p", task_id=f"t{i:02}") for i in range(20)]
    results = await asyncio.gather(
        *(a.add(task=t, channel="C1", created_by="UA") for t in tasks),
        *(b.add(task=t, channel="C1", created_by="UB") for t in tasks),
        *(b.add(task=t, channel="C2", created_by="UB") for t in tasks),
    )
    # Each (channel, task) was created exactly once, whoever won the race.
    assert sum(created for _, created in results) == 40
    assert [w.task for w in await a.of_channel("C1")] == tasks
    assert [w.task for w in await b.of_channel("C2")] == tasks
    assert await a.watched_tasks() == tasks
    await assert_indexes_match_records(a, redis)

    # Removing from one channel while the other keeps and re-adds: t stays watched by C2.
    await asyncio.gather(
        *(a.remove(task=t, channel="C1") for t in tasks),
        *(b.add(task=t, channel="C2", created_by="UB", name="x") for t in tasks),
        b.pause("C2", "is_archived"),
    )
    assert await a.of_channel("C1") == []
    assert await a.watched_tasks() == tasks
    await assert_indexes_match_records(a, redis)

    # Both sides removing the same watches: each is removed once, and nothing is left.
    removed = await asyncio.gather(
        *(a.remove(task=t, channel="C2") for t in tasks),
        *(b.remove(task=t, channel="C2") for t in tasks),
    )
    assert sum(r is not None for r in removed) == 20
    await assert_indexes_match_records(a, redis)


async def test_concurrent_add_and_remove_leave_indexes_consistent(
    redis: aioredis.Redis, redis_factory: RedisFactory, clock: Clock
) -> None:
    a = WatchStore(redis_factory(), clock=clock)
    b = WatchStore(redis_factory(), clock=clock)
    for _ in range(10):
        await asyncio.gather(
            a.add(task=T1, channel="C1", created_by="UA"),
            b.remove(task=T1, channel="C1"),
            b.add(task=T1_EP0, channel="C1", created_by="UB"),
            a.add(task=T1, channel="C2", created_by="UA"),
            b.remove(task=T1, channel="C2"),
        )
        await assert_indexes_match_records(a, redis)


# --- Redis down ------------------------------------------------------------------------------


async def test_redis_outage_is_a_store_error(redis_factory: RedisFactory) -> None:
    down = WatchStore(redis_factory("redis://127.0.0.1:1/0"))
    with pytest.raises(StoreError) as info:
        await down.add(task=T1, channel="C1", created_by="U1")
    assert "try again" in info.value.user_message()
    with pytest.raises(StoreError):
        await down.of_channel("C1")


# --- who may change watches ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "groups", "admins", "allowed"),
    [
        ("U1", set(), frozenset(), True),  # no admins: anyone
        ("U1", {"S1"}, frozenset(), True),
        ("U1", set(), frozenset({"U1"}), True),
        ("W1", set(), frozenset({"W1", "U2"}), True),  # Enterprise Grid user ids
        ("U2", set(), frozenset({"U1"}), False),
        ("U2", {"S1"}, frozenset({"U1", "S1"}), True),  # via a user group
        ("U2", {"S2"}, frozenset({"U1", "S1"}), False),
        ("U2", set(), frozenset({"S1"}), False),
        ("S1", set(), frozenset({"U1"}), False),
    ],
)
def test_may_change_watches(
    user: str, groups: set[str], admins: frozenset[str], allowed: bool
) -> None:
    assert may_change_watches(user, groups, admins) is allowed


async def test_records_written_before_run_watches_still_read(
    store: WatchStore, redis: aioredis.Redis
) -> None:
    # The record format from before the shared watch code (channel_watches.py): unchanged.
    old = (
        '{"name":"prod","created_by":"U1","created_at":1000.0,"paused_reason":null,'
        '"paused_at":null,"muted_until":5000.0,"last_alert_at":1500.0,"v":1,'
        '"project_id":"p","task_id":"t1","ep":"0","types":["Harbor"]}'
    )
    await redis.hset(keys.watch_channel("C1"), "p:t1", old)
    [watch] = await store.of_channel("C1")
    assert watch == Watch(
        task=T1_EP0,
        channel="C1",
        types=frozenset({"Harbor"}),
        name="prod",
        created_by="U1",
        created_at=1000.0,
        muted_until=5000.0,
        last_alert_at=1500.0,
    )
    await store.note_alert(task=T1, channel="C1", at=2000.0)
    rewritten = json.loads(await redis.hget(keys.watch_channel("C1"), "p:t1"))
    assert rewritten == {**json.loads(old), "last_alert_at": 2000.0}
