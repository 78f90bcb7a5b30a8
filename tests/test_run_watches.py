"""The run-watch store on a real Redis: one watch per channel and kind, the baseline time kept
across re-watches, pause and mute as for task watches, the channel index always matching the
records, whatever the concurrency, and everything surviving a new process."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from bot.errors import StoreError
from bot.runs import RunKind
from bot.storage import keys
from bot.storage.run_watch_store import RunWatch, RunWatchStore
from bot.storage.watch_store import WatchStore
from tests.plugins.redis_server import RedisFactory
from tests.support import Clock

AUTO, MANUAL = RunKind.AUTO, RunKind.MANUAL


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis: aioredis.Redis, clock: Clock) -> RunWatchStore:
    return RunWatchStore(redis, clock=clock)


def watch(
    channel: str = "C1",
    kind: RunKind | None = AUTO,
    *,
    by: str = "U1",
    at: float = 1000.0,
    types: frozenset[str] = frozenset(),
    name: str | None = None,
) -> RunWatch:
    return RunWatch(
        channel=channel, kind=kind, types=types, name=name, created_by=by, created_at=at
    )


async def assert_index_matches_records(store: RunWatchStore, redis: aioredis.Redis) -> None:
    watches = await store.all()
    assert await store.channels() == sorted({w.channel for w in watches})
    if not watches:
        assert await redis.keys("*") == []


async def test_add_list_remove(store: RunWatchStore, redis: aioredis.Redis) -> None:
    given = watch(types=frozenset({"Harbor"}), name="prod")
    stored, created = await store.add(given)
    assert created and stored == given
    assert not stored.paused and stored.alerts(1000.0)
    assert await store.of_channel("C1") == [given]
    assert await store.get(channel="C1", kind=AUTO) == given
    assert await store.get(channel="C1", kind=None) is None
    assert await store.all() == [given]
    assert await store.channels() == ["C1"]

    assert await store.remove(channel="C1", kind=MANUAL) is None
    assert await store.remove(channel="C1", kind=AUTO) == given
    assert await store.remove(channel="C1", kind=AUTO) is None
    assert await store.of_channel("C1") == []
    await assert_index_matches_records(store, redis)  # and nothing is left behind


async def test_key_layout_apart_from_task_watches(
    store: RunWatchStore, redis: aioredis.Redis, clock: Clock
) -> None:
    await store.add(watch(kind=None))
    await store.add(watch(kind=MANUAL))
    assert sorted(await redis.keys("*")) == sorted(
        k.encode() for k in (keys.run_watch_channel("C1"), keys.run_watch_channels())
    )
    assert sorted(await redis.hkeys(keys.run_watch_channel("C1"))) == [b"all", b"manualSync"]
    assert keys.run_watch_channel("C1") == "hss:runwatch:channel:C1"
    # Task watches of the same channel neither see run watches nor are paused with them.
    tasks = WatchStore(redis, clock=clock)
    assert await tasks.of_channel("C1") == [] and await tasks.channels() == []
    assert await tasks.pause("C1", "is_archived") == []
    assert [w.kind for w in await store.of_channel("C1")] == [None, MANUAL]


async def test_one_watch_per_kind_listed_all_auto_manual(store: RunWatchStore) -> None:
    for kind in (MANUAL, AUTO, None):
        _, created = await store.add(watch(kind=kind))
        assert created
    await store.add(watch("C0", MANUAL))
    assert [w.kind for w in await store.of_channel("C1")] == [None, AUTO, MANUAL]
    assert [(w.channel, w.kind) for w in await store.all()] == [
        ("C0", MANUAL),
        ("C1", None),
        ("C1", AUTO),
        ("C1", MANUAL),
    ]
    assert await store.channels() == ["C0", "C1"]


async def test_watching_again_keeps_the_baseline_creator_and_mute(
    store: RunWatchStore, redis: aioredis.Redis
) -> None:
    first, _ = await store.add(watch(name="a"))
    await store.mute(channel="C1", kind=AUTO, until=5000.0)
    await store.pause("C1", "not_in_channel")
    again, created = await store.add(watch(by="U2", at=3000.0, types=frozenset({"Jfrog"})))
    assert not created
    assert (again.types, again.name) == (frozenset({"Jfrog"}), None)
    # Runs that began between the two commands are followed: the baseline did not move.
    assert (again.created_by, again.created_at) == ("U1", first.created_at)
    assert again.muted_until == 5000.0
    assert not again.paused and again.paused_at is None
    assert await store.of_channel("C1") == [again]
    assert await redis.hlen(keys.run_watch_channel("C1")) == 1


async def test_a_new_watch_is_stored_unpaused(store: RunWatchStore) -> None:
    paused = RunWatch(
        channel="C1",
        kind=None,
        created_by="U1",
        created_at=1.0,
        paused_reason="is_archived",
        paused_at=1.0,
    )
    stored, _ = await store.add(paused)
    assert not stored.paused and not (await store.of_channel("C1"))[0].paused


async def test_pause_and_resume_a_channel(store: RunWatchStore, clock: Clock) -> None:
    await store.add(watch(kind=AUTO))
    await store.add(watch(kind=None))
    await store.add(watch("C2", AUTO))
    clock.now = 1100.0
    paused = await store.pause("C1", "is_archived")
    assert [(w.kind, w.paused_reason, w.paused_at) for w in paused] == [
        (None, "is_archived", 1100.0),
        (AUTO, "is_archived", 1100.0),
    ]
    assert all(w.paused and not w.alerts(1100.0) for w in await store.of_channel("C1"))
    assert not any(w.paused for w in await store.of_channel("C2"))
    # Paused watches still exist: the runs they follow stay followed for when they resume.
    assert len(await store.all()) == 3

    clock.now = 1200.0
    again = await store.pause("C1", "channel_not_found")
    assert {(w.paused_reason, w.paused_at) for w in again} == {("channel_not_found", 1100.0)}
    resumed = await store.resume("C1")
    assert [(w.paused_reason, w.paused_at) for w in resumed] == [(None, None)] * 2
    assert all(w.alerts(1200.0) for w in await store.all())
    assert await store.pause("C-none", "is_archived") == []
    with pytest.raises(ValueError):
        await store.pause("C1", "")


async def test_mute_expires_by_itself_and_unmute_clears(store: RunWatchStore) -> None:
    await store.add(watch(kind=None))
    muted = await store.mute(channel="C1", kind=None, until=4600.0)
    assert muted is not None and muted.muted_until == 4600.0
    assert muted.muted(4599.9) and not muted.alerts(4599.9)
    assert not muted.muted(4600.0) and muted.alerts(4600.0)  # until is exclusive
    shorter = await store.mute(channel="C1", kind=None, until=2000.0)  # the latest wins
    assert shorter is not None and shorter.muted_until == 2000.0
    unmuted = await store.unmute(channel="C1", kind=None)
    assert unmuted is not None and unmuted.muted_until is None
    assert (await store.of_channel("C1"))[0].alerts(1000.0)


async def test_changing_what_is_not_watched_changes_nothing(
    store: RunWatchStore, redis: aioredis.Redis
) -> None:
    await store.add(watch("C2", AUTO))
    assert await store.mute(channel="C1", kind=AUTO, until=5000.0) is None
    assert await store.unmute(channel="C2", kind=MANUAL) is None
    assert await store.remove(channel="C2", kind=None) is None
    assert await store.remove(channel="C1", kind=AUTO) is None
    assert sorted(await redis.keys("*")) == sorted(
        k.encode() for k in (keys.run_watch_channel("C2"), keys.run_watch_channels())
    )
    assert await store.all() == [watch("C2", AUTO)]


async def test_unreadable_record_does_not_hide_the_others(
    store: RunWatchStore, redis: aioredis.Redis
) -> None:
    await store.add(watch(kind=AUTO))
    await redis.hset(keys.run_watch_channel("C1"), "all", b"{not json")
    await redis.hset(keys.run_watch_channel("C1"), "manualSync", b'{"kind":"weekly"}')
    assert [w.kind for w in await store.of_channel("C1")] == [AUTO]
    assert [w.kind for w in await store.pause("C1", "is_archived")] == [AUTO]
    assert [w.kind for w in await store.all()] == [AUTO]


async def test_everything_survives_a_new_process(
    store: RunWatchStore, redis_factory: RedisFactory, clock: Clock
) -> None:
    await store.add(watch(kind=None, name="n", types=frozenset({"Harbor", "Other"})))
    await store.mute(channel="C1", kind=None, until=9000.0)
    await store.add(watch("C2", MANUAL))
    await store.pause("C2", "not_in_channel")
    before = await store.all()
    restarted = RunWatchStore(redis_factory(), clock=clock)
    assert await restarted.all() == before
    assert before[0].types == frozenset({"Harbor", "Other"}) and before[0].muted_until == 9000.0
    assert before[1].paused_reason == "not_in_channel"


async def test_concurrent_changes_from_two_connections(
    redis: aioredis.Redis, redis_factory: RedisFactory, clock: Clock
) -> None:
    a = RunWatchStore(redis_factory(), clock=clock)
    b = RunWatchStore(redis_factory(), clock=clock)
    channels = [f"C{i:02}" for i in range(15)]
    kinds = (None, AUTO, MANUAL)
    results = await asyncio.gather(
        *(a.add(watch(c, k, by="UA")) for c in channels for k in kinds),
        *(b.add(watch(c, k, by="UB")) for c in channels for k in kinds),
    )
    # Each (channel, kind) was created exactly once, whoever won the race.
    assert sum(created for _, created in results) == 45
    assert len(await a.all()) == 45
    await assert_index_matches_records(a, redis)

    # Removing every watch while the other connection pauses and mutes them.
    removed = await asyncio.gather(
        *(a.remove(channel=c, kind=k) for c in channels for k in kinds),
        *(b.remove(channel=c, kind=k) for c in channels for k in kinds),
        *(b.pause(c, "is_archived") for c in channels),
        *(b.mute(channel=c, kind=AUTO, until=9.0) for c in channels),
    )
    assert sum(isinstance(r, RunWatch) for r in removed[:90]) == 45
    await assert_index_matches_records(a, redis)


async def test_concurrent_add_and_remove_leave_the_index_consistent(
    redis: aioredis.Redis, redis_factory: RedisFactory, clock: Clock
) -> None:
    a = RunWatchStore(redis_factory(), clock=clock)
    b = RunWatchStore(redis_factory(), clock=clock)
    for _ in range(10):
        await asyncio.gather(
            a.add(watch("C1", AUTO)),
            b.remove(channel="C1", kind=AUTO),
            b.add(watch("C1", None)),
            a.remove(channel="C1", kind=None),
        )
        await assert_index_matches_records(a, redis)


async def test_redis_outage_is_a_store_error(redis_factory: RedisFactory) -> None:
    down = RunWatchStore(redis_factory("redis://127.0.0.1:1/0"))
    with pytest.raises(StoreError) as info:
        await down.add(watch())
    assert "try again" in info.value.user_message()
    for read in (down.of_channel("C1"), down.all(), down.pause("C1", "is_archived")):
        with pytest.raises(StoreError):
            await read
