"""The mirror's storage: packing, Redis and in-memory stores, and failover between them."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.mirror import REMOVED, Change, Row, Snapshot, View, view_key
from bot.models import REGISTRY_TYPES, UNKNOWN_STATUS, ApiFilter, SyncStatus, TaskRef
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.storage.mirror_codec import CHUNK_ROWS, decode_snapshot, encode_snapshot
from bot.storage.mirror_fallback import FailoverMirrorStore, MemoryMirrorStore
from bot.storage.mirror_store import MirrorStore, RedisMirrorStore
from bot.storage.outage import RedisHealth

T0 = 1_764_000_000.125
REF = TaskRef(project_id="proj", task_id="task:1/ü", enterprise_project_id="0")
OTHER = TaskRef(project_id="proj", task_id="task-2")
FULL = ApiFilter()
FAILED_VIEW = ApiFilter(sync_status=SyncStatus.FAILED)


def make_row(i: int, rng: random.Random) -> Row:
    """A realistic registry row: 32-hex id, ``harbor-prod-00042``-style name, mixed status."""
    status = rng.choices(["finished", "running", "failed"], weights=[90, 5, 5])[0]
    reason = "SWROperatePolicy missing" if status == "failed" and i % 2 else ""
    return Row(
        registry_id=f"{rng.getrandbits(128):032x}",
        name=f"harbor-prod-{i:05d}",
        type=rng.choice(REGISTRY_TYPES),
        status=status,
        reason=reason,
        seen_at=T0 + i // 200,
        known_status=status,
    )


def big_snapshot(count: int, *, seed: int = 7, generation: int = 1) -> Snapshot:
    rng = random.Random(seed)
    rows = [make_row(i, rng) for i in range(count)]
    views = {view_key(FULL): View(FULL, T0, count)}
    return Snapshot(rows={r.registry_id: r for r in rows}, views=views, generation=generation)


def tricky_snapshot(generation: int = 1) -> Snapshot:
    rows = [
        Row(
            "a",
            "镜像仓库-生产",
            "Harbor",
            "failed",
            "权限不足 <SWR> & \"quotes\" 'x'",
            T0,
            "failed",
        ),
        Row("b", "", "", "finished", "", T0 + 0.5, "finished"),
        Row("c", "<b>&amp;</b>", "Jfrog", UNKNOWN_STATUS, "", T0 + 1, "running"),
        Row("d", "no status from the API", "Other", UNKNOWN_STATUS, "", T0 + 2, ""),
        Row("e", "emoji 🚀 | pipe, comma", "SwrPrivate", "running", "\n\t", T0 + 3, "running"),
    ]
    views = {
        view_key(f): View(f, T0 + n, n)
        for n, f in enumerate(
            [
                FULL,
                FAILED_VIEW,
                ApiFilter(registry_types=frozenset({"Harbor", "Jfrog"})),
                ApiFilter(SyncStatus.RUNNING, frozenset({"Other"}), "prod | 生产"),
            ]
        )
    }
    return Snapshot(rows={r.registry_id: r for r in rows}, views=views, generation=generation)


def as_redis_fields(snap: Snapshot) -> dict[bytes, bytes]:
    return {k.encode(): v for k, v in encode_snapshot(snap).items()}


def change(rid: str, old: str, new: str, at: float = T0) -> Change:
    return Change(rid, f"仓库 {rid} <&>", "Harbor", old, new, "原因 <x> & y", at)


# --- packing ---


@pytest.mark.parametrize(
    "snap",
    [
        pytest.param(Snapshot(), id="empty"),
        pytest.param(tricky_snapshot(generation=42), id="unicode-markup-empty-strings"),
        pytest.param(big_snapshot(20_000), id="20k-rows"),
    ],
)
def test_encode_decode_round_trip(snap: Snapshot) -> None:
    assert decode_snapshot(as_redis_fields(snap)) == snap


def test_rows_are_split_into_compressed_chunks() -> None:
    fields = encode_snapshot(big_snapshot(20_000))
    assert sorted(fields) == ["c0", "c1", "c2", "c3", "meta"]
    assert CHUNK_ROWS == 5000


def test_unknown_row_without_known_status_survives_the_round_trip() -> None:
    # Otherwise the next fetch reports a change from "unknown" that never happened.
    snap = tricky_snapshot()
    assert decode_snapshot(as_redis_fields(snap)).rows["d"].known_status == ""


def test_decoding_nothing_is_an_empty_snapshot() -> None:
    assert decode_snapshot({}) == Snapshot()


# --- one contract, two stores ---


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest, redis: aioredis.Redis) -> MirrorStore:
    if request.param == "redis":
        return RedisMirrorStore(redis)
    return MemoryMirrorStore(time.time)


async def test_empty_task(store: MirrorStore) -> None:
    assert await store.load(REF) == Snapshot()
    assert await store.generation(REF) == 0
    assert await store.changes(REF) == []


async def test_save_and_load(store: MirrorStore) -> None:
    snap = tricky_snapshot(generation=1)
    assert await store.save(REF, snap, [], expected=0)
    assert await store.load(REF) == snap
    assert await store.generation(REF) == 1
    assert await store.load(OTHER) == Snapshot(), "tasks are separate"


async def test_stale_save_is_refused_and_changes_nothing(store: MirrorStore) -> None:
    first = tricky_snapshot(generation=1)
    assert await store.save(REF, first, [change("a", "finished", "failed")], expected=0)
    stale = big_snapshot(10, generation=1)
    assert not await store.save(REF, stale, [change("b", "failed", REMOVED)], expected=0)
    assert await store.load(REF) == first
    assert [c for _, c in await store.changes(REF)] == [change("a", "finished", "failed")]


async def test_concurrent_saves_of_one_generation_one_wins(store: MirrorStore) -> None:
    one, two = tricky_snapshot(generation=1), big_snapshot(50, generation=1)
    results = await asyncio.gather(
        store.save(REF, one, [], expected=0), store.save(REF, two, [], expected=0)
    )
    assert sorted(results) == [False, True]
    assert await store.load(REF) == (one if results[0] else two)


async def test_change_stream_reads_after_an_id(store: MirrorStore) -> None:
    first = [change("a", "finished", "failed", T0), change("b", "failed", REMOVED, T0 + 0.25)]
    second = [change("c", "failed", "running", T0 + 60.5)]
    assert await store.save(REF, tricky_snapshot(generation=1), first, expected=0)
    assert await store.save(REF, tricky_snapshot(generation=2), [], expected=1)
    assert await store.save(REF, tricky_snapshot(generation=3), second, expected=2)

    entries = await store.changes(REF)
    assert [c for _, c in entries] == first + second
    ids = [eid for eid, _ in entries]
    assert len(set(ids)) == 3
    assert await store.changes(REF, after=ids[0]) == entries[1:]
    assert await store.changes(REF, after=ids[1]) == entries[2:]
    assert await store.changes(REF, after=ids[2]) == []
    assert await store.changes(OTHER) == []


async def test_trimming_changes_keeps_the_given_entry_and_everything_after(
    redis: aioredis.Redis,
) -> None:
    store = RedisMirrorStore(redis)
    for generation in range(4):
        changes = [change(f"r{generation}", "running", "failed", T0 + generation)]
        assert await store.save(REF, tricky_snapshot(generation + 1), changes, expected=generation)
    ids = [eid for eid, _ in await store.changes(REF)]
    assert await store.trim_changes(REF, before=ids[2]) == 2
    assert [eid for eid, _ in await store.changes(REF)] == ids[2:]
    assert await store.trim_changes(REF, before=ids[0]) == 0  # a stale cursor trims nothing
    assert await store.trim_changes(OTHER, before=ids[3]) == 0  # no stream: nothing to do
    assert [eid for eid, _ in await store.changes(REF)] == ids[2:]


async def test_lock_is_exclusive_and_only_the_owner_releases(store: MirrorStore) -> None:
    assert await store.lock(REF, "failed||", "me", 10)
    assert not await store.lock(REF, "failed||", "you", 10)
    assert await store.lock(REF, "||", "you", 10), "locks are per view"
    assert not await store.unlock(REF, "failed||", "you"), "wrong owner cannot release"
    assert not await store.extend_lock(REF, "failed||", "you", 10), "wrong owner cannot extend"
    assert not await store.lock(REF, "failed||", "you", 10)
    assert await store.unlock(REF, "failed||", "me")
    assert not await store.unlock(REF, "failed||", "me"), "released already"
    assert await store.lock(REF, "failed||", "you", 10)


async def test_lock_expires_unless_extended(store: MirrorStore) -> None:
    assert await store.lock(REF, "v", "me", 0.3)
    assert await store.lock(REF, "w", "me", 0.3)
    assert await store.lock(REF, "x", "me", 0.3)
    assert await store.extend_lock(REF, "w", "me", 5), "the owner extends"
    await asyncio.sleep(0.6)
    assert await store.lock(REF, "v", "you", 10), "expired: free for others"
    assert not await store.unlock(REF, "v", "me"), "an expired owner releases nothing"
    assert not await store.extend_lock(REF, "v", "me", 10), "nor extends"
    assert not await store.extend_lock(REF, "x", "me", 10), "expired, even if nobody took it"
    assert not await store.lock(REF, "w", "you", 10), "extended: still held"


async def test_auth_lock(store: MirrorStore) -> None:
    assert await store.get_auth_lock("scope") is None
    info = {"error_code": "APIGW.0301", "request_id": "r-1", "at": T0}
    await store.set_auth_lock("scope", info)
    assert await store.get_auth_lock("scope") == info
    assert await store.get_auth_lock("other") is None
    await store.set_auth_lock("scope", None)
    assert await store.get_auth_lock("scope") is None


# --- Redis specifics ---


async def test_a_second_process_sees_the_first_ones_save(redis: aioredis.Redis) -> None:
    one, two = RedisMirrorStore(redis), RedisMirrorStore(redis)
    assert await one.save(REF, tricky_snapshot(generation=1), [], expected=0)
    assert await two.load(REF) == tricky_snapshot(generation=1)
    newer = big_snapshot(20, generation=2)
    assert await two.save(REF, newer, [], expected=1)
    assert await one.load(REF) == newer, "the cached generation is stale: reload"


async def test_unchanged_snapshot_is_served_from_the_process_cache(redis: aioredis.Redis) -> None:
    writer, reader = RedisMirrorStore(redis), RedisMirrorStore(redis)
    assert await writer.save(REF, big_snapshot(100), [], expected=0)
    await reader.load(REF)
    await redis.config_resetstat()
    for _ in range(3):
        assert await reader.load(REF) == big_snapshot(100)
    stats = await redis.info("commandstats")
    assert "cmdstat_hgetall" not in stats
    assert stats["cmdstat_hget"]["calls"] == 3


class _OvertakenPipeline(Pipeline):
    hook: Callable[[], Awaitable[None]] | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.hook is not None:
            await self.hook()
        return await super().execute(raise_on_error)


class OvertakenRedis(aioredis.Redis):
    """A client whose transactions are overtaken: ``before_exec`` runs between WATCH and
    EXEC, as another replica's save would."""

    before_exec: Callable[[], Awaitable[None]] | None = None

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = _OvertakenPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.hook = self.before_exec
        return pipe


async def test_save_overtaken_between_watch_and_exec_is_refused(redis: aioredis.Redis) -> None:
    winner = big_snapshot(20, generation=1)
    flip = change("w", "failed", "finished")

    async def other_replica_saves() -> None:
        assert await RedisMirrorStore(redis).save(REF, winner, [flip], expected=0)

    overtaken = OvertakenRedis(connection_pool=redis.connection_pool)
    overtaken.before_exec = other_replica_saves
    loser = RedisMirrorStore(overtaken)
    lost = [change("l", "running", "failed")]
    assert not await loser.save(REF, tricky_snapshot(generation=1), lost, expected=0)
    assert await loser.load(REF) == winner
    assert [c for _, c in await loser.changes(REF)] == [flip]


async def test_cache_is_not_fooled_when_the_key_was_lost(redis: aioredis.Redis) -> None:
    one, two = RedisMirrorStore(redis), RedisMirrorStore(redis)
    assert await one.save(REF, tricky_snapshot(generation=1), [], expected=0)
    await redis.flushdb()  # a restart without persistence: generations start again
    fresh = big_snapshot(20, generation=1)
    assert await two.save(REF, fresh, [], expected=0)
    assert await one.load(REF) == fresh


async def test_save_replaces_every_chunk(redis: aioredis.Redis) -> None:
    store = RedisMirrorStore(redis)
    assert await store.save(REF, big_snapshot(20_000), [], expected=0)
    assert await redis.hlen(keys.mirror(REF)) == 5
    small = tricky_snapshot(generation=2)
    assert await store.save(REF, small, [], expected=1)
    assert await redis.hlen(keys.mirror(REF)) == 2
    assert await RedisMirrorStore(redis).load(REF) == small


async def test_changes_are_a_redis_stream(redis: aioredis.Redis) -> None:
    store = RedisMirrorStore(redis)
    flip = change("a", "failed", "finished", T0 + 0.001)
    assert await store.save(REF, tricky_snapshot(), [flip], expected=0)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(  # type: ignore[assignment]
        keys.mirror_changes(REF)
    )
    [(eid, fields)] = entries
    assert fields[b"new"] == b"finished"
    assert fields[b"reason"].decode() == flip.reason
    assert await store.changes(REF) == [(eid.decode(), flip)]
    assert await store.changes(REF, after="0-0") == [(eid.decode(), flip)]


async def test_lock_ttl_is_set_in_redis(redis: aioredis.Redis) -> None:
    store = RedisMirrorStore(redis)
    assert await store.lock(REF, "v", "me", 30)
    assert 29_000 < await redis.pttl(keys.refresh_lock(REF, "v")) <= 30_000
    assert await store.extend_lock(REF, "v", "me", 120)
    assert 119_000 < await redis.pttl(keys.refresh_lock(REF, "v")) <= 120_000


async def test_memory_per_registry(redis: aioredis.Redis) -> None:
    """Product target: under 150 bytes of Redis memory per registry."""
    assert await RedisMirrorStore(redis).save(REF, big_snapshot(10_000), [], expected=0)
    used = await redis.memory_usage(keys.mirror(REF), samples=0)
    assert used is not None
    per_registry = used / 10_000
    print(f"MEMORY USAGE {used} bytes = {per_registry:.1f} bytes per registry")
    assert per_registry < 150, f"{per_registry:.1f} bytes per registry"


# --- failover ---


@pytest.fixture
async def outage_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, socket_connect_timeout=1)
    try:
        yield client
    finally:
        await client.aclose()


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "bot.storage.outage" and r.levelno == logging.WARNING
    ]


async def test_failover_to_memory_and_back(
    redis_server: EmbeddedRedis,
    outage_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.storage.outage")
    store = FailoverMirrorStore(
        RedisMirrorStore(outage_client),
        MemoryMirrorStore(time.time),
        health=RedisHealth(probe_interval=0.0),  # probe on every call: no waiting in the test
    )
    shared = tricky_snapshot(generation=1)
    assert await store.save(REF, shared, [], expected=0)
    assert outage_warnings(caplog) == []

    redis_server.stop()
    assert await store.load(REF) == shared, "what this process knew survives the outage"
    local = big_snapshot(30, generation=2)
    flip = change("x", "failed", "finished")
    assert await store.save(REF, local, [flip], expected=1)
    assert await store.load(REF) == local
    assert await store.generation(REF) == 2
    assert [c for _, c in await store.changes(REF)] == [flip]
    assert await store.lock(REF, "v", "me", 10)
    assert not await store.lock(REF, "v", "you", 10)
    assert len(outage_warnings(caplog)) == 1, "one warning per outage"

    redis_server.start()  # not persistent: it comes back empty
    assert await store.load(REF) == Snapshot()
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert await store.save(REF, shared, [], expected=0)
    assert await RedisMirrorStore(outage_client).load(REF) == shared
    assert len(outage_warnings(caplog)) == 1

    redis_server.stop()
    assert await store.load(REF) == local, "the in-process mirror kept its state"
    assert len(outage_warnings(caplog)) == 2, "a new outage warns again"
