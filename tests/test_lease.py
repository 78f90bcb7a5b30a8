"""``keep_alive`` on a real Redis: it keeps a lease through a stalled body, stops when the
body ends (even a cancelled one), marks the lease lost when another owner took it, rides out a
short Redis outage and gives the lease up when Redis stays away longer than its TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.lock import Lock

from bot.models import TaskRef
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.storage.lease import Held, Lease, RedisLease, keep_alive
from bot.storage.mirror_fallback import MemoryMirrorStore
from bot.storage.mirror_store import RedisMirrorStore, ViewLock
from tests.plugins.redis_server import RedisFactory

NAME = "hss:test:lease"
REF = TaskRef(project_id="p", task_id="t")


class Noted:
    """A lease that notes each extension's outcome: True, False or the error's class name."""

    def __init__(self, inner: Lease) -> None:
        self.inner = inner
        self.outcomes: list[bool | str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def ttl(self) -> float:
        return self.inner.ttl

    async def extend(self) -> bool:
        try:
            extended = await self.inner.extend()
        except Exception as exc:
            self.outcomes.append(type(exc).__name__)
            raise
        self.outcomes.append(extended)
        return extended

    async def release(self) -> bool:
        return await self.inner.release()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def redis_lease(redis: aioredis.Redis, ttl: float) -> RedisLease:
    lock = Lock(redis, NAME, timeout=ttl, thread_local=False)
    assert await lock.acquire(blocking=False)
    return RedisLease(lock)


def keepers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "_keep"]  # type: ignore[union-attr]


async def stall(redis: aioredis.Redis, key: str, seconds: float, held: Held) -> None:
    """Stand for a slow body: for ``seconds``, the key must exist and the lease be held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await redis.exists(key), "the lease expired under a running body"
        assert not held.lost
        await asyncio.sleep(0.02)


# --- kept, then released ------------------------------------------------------------------


async def test_a_redis_lock_is_kept_through_a_body_three_times_its_ttl(
    redis: aioredis.Redis,
) -> None:
    lease = Noted(await redis_lease(redis, 0.3))
    async with keep_alive(lease) as held:
        await stall(redis, NAME, 0.9, held)
    assert lease.outcomes[:2] == [True, True]
    assert not await redis.exists(NAME), "released at the end"
    assert keepers() == [], "the keeper stopped with the body"


async def test_the_mirror_stores_view_lock_is_kept_and_released(redis: aioredis.Redis) -> None:
    lock = ViewLock(store=RedisMirrorStore(redis), ref=REF, view="v", owner="me", ttl=0.3)
    assert await lock.acquire()
    async with keep_alive(lock) as held:
        await stall(redis, keys.refresh_lock(REF, "v"), 0.9, held)
    assert not await redis.exists(keys.refresh_lock(REF, "v"))
    assert await ViewLock(
        store=RedisMirrorStore(redis), ref=REF, view="v", owner="you", ttl=1
    ).acquire()


async def test_the_memory_stores_view_lock_is_kept_past_its_ttl() -> None:
    store = MemoryMirrorStore(time.monotonic)
    lock = ViewLock(store=store, ref=REF, view="v", owner="me", ttl=0.3)
    assert await lock.acquire()
    async with keep_alive(lock):
        deadline = time.monotonic() + 0.9
        while time.monotonic() < deadline:
            assert not await store.lock(REF, "v", "you", 1), "still held"
            await asyncio.sleep(0.02)
    assert await store.lock(REF, "v", "you", 1), "released at the end"


async def test_a_cancelled_body_stops_the_keeper_and_releases(redis: aioredis.Redis) -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with keep_alive(await redis_lease(redis, 0.3)):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await entered.wait()
    assert len(keepers()) == 1
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()
    assert keepers() == []
    assert not await redis.exists(NAME)


# --- lost ----------------------------------------------------------------------------------


async def test_a_lease_another_owner_took_is_lost_and_left_to_it(redis: aioredis.Redis) -> None:
    lease = Noted(await redis_lease(redis, 1.5))
    async with keep_alive(lease) as held:
        await redis.set(NAME, "another-replica", px=5000)  # ours expired; theirs now
        await until(lambda: held.lost, timeout=1.2)  # at the first tick, not the TTL's end
        assert keepers() == [], "keeping ended"
    assert lease.outcomes == [False]
    assert await redis.get(NAME) == b"another-replica", "their lease is not released"


def test_a_lease_without_a_timeout_is_refused(redis: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="timeout"):
        RedisLease(Lock(redis, NAME))


# --- outages -------------------------------------------------------------------------------


@pytest.fixture
async def persistent(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A server that keeps its keys (and their expiry times) across a restart."""
    server = EmbeddedRedis(data_dir=tmp_path / "persistent", persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_short_outage_is_ridden_out(
    persistent: EmbeddedRedis, redis_factory: RedisFactory
) -> None:
    client = redis_factory(persistent.url, socket_connect_timeout=1, socket_timeout=1)
    lease = Noted(await redis_lease(client, 3.0))
    async with keep_alive(lease) as held:
        await asyncio.to_thread(persistent.stop)
        await until(lambda: len(lease.outcomes) == 1)
        assert lease.outcomes == ["ConnectionError"]
        assert not held.lost, "one failed tick loses nothing"
        await asyncio.to_thread(persistent.start)
        await until(lambda: True in lease.outcomes)
        assert not held.lost
        assert 2000 < await client.pttl(NAME) <= 3000, "extended again once Redis was back"
    assert not await client.exists(NAME)


async def test_an_outage_longer_than_the_ttl_loses_the_lease(
    redis_server: EmbeddedRedis, redis_factory: RedisFactory
) -> None:
    client = redis_factory(redis_server.url, socket_connect_timeout=1, socket_timeout=1)
    lease = Noted(await redis_lease(client, 0.6))
    async with keep_alive(lease) as held:
        stopped_at = time.monotonic()
        await asyncio.to_thread(redis_server.stop)
        await until(lambda: held.lost)
        assert time.monotonic() - stopped_at >= 0.6 - 0.2, "not before the lease could expire"
        assert (
            set(lease.outcomes) <= {True, "ConnectionError"} and "ConnectionError" in lease.outcomes
        )
        await until(lambda: keepers() == [])
    # The release at the end met the outage and let it pass: the lease expires by itself.
