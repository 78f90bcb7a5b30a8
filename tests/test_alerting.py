"""The alerting pipeline on a real Redis: change-stream entries written as the mirror store
writes them, watches through the watch store, outbox items read back from their streams.
Times are compressed through an injected clock; every refresh has its own ``at``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.alerting.flips import AlertPlan, Flip, FlipKind, Incident
from bot.alerting.pipeline import AlertPipeline, advance, plan_writes, refreshes
from bot.alerting.state import AlertState, decode_incident, decode_state, encode_incident
from bot.mirror import REMOVED, Change
from bot.models import TaskRef
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.storage.watch_store import Watch, WatchStore
from tests.plugins.redis_server import RedisFactory
from tests.support import Clock, until

T1 = TaskRef(project_id="p", task_id="t1")
T2 = TaskRef(project_id="p", task_id="t2", enterprise_project_id="ep0")
C1, C2 = "C0001", "C0002"


@pytest.fixture
def clock() -> Clock:
    return Clock(1_000_000.0)


@pytest.fixture
def watches(redis: aioredis.Redis, clock: Clock) -> WatchStore:
    return WatchStore(redis, clock=clock)


@pytest.fixture
def pipeline(redis: aioredis.Redis, watches: WatchStore, clock: Clock) -> AlertPipeline:
    return AlertPipeline(redis, watches=watches, clock=clock)


Row = tuple[str, str, str]  # registry id, old status, new status


async def refresh(
    redis: aioredis.Redis,
    clock: Clock,
    *rows: Row,
    task: TaskRef = T1,
    types: dict[str, str] | None = None,
    reason: str = "pull timeout",
) -> None:
    """One refresh, a minute after the last: its changes XADDed with the fields, types and
    order the mirror store writes."""
    clock.now += 60
    for rid, old, new in rows:
        fields = {
            "id": rid,
            "name": f"repo-{rid}",
            "type": (types or {}).get(rid, "Harbor"),
            "old": old,
            "new": new,
            "reason": reason if new == "failed" else "",
            "at": repr(clock.now),
        }
        await redis.xadd(keys.mirror_changes(task), fields)  # type: ignore[arg-type]


async def outbox(redis: aioredis.Redis, channel: str = C1) -> list[dict[str, str]]:
    entries = await redis.xrange(keys.outbox(channel))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


def kinds(items: list[dict[str, str]]) -> list[str]:
    return [i["kind"] for i in items]


def body(item: dict[str, str]) -> str:
    """Everything a reader sees of an item: fallback text and blocks."""
    return item["text"] + "\n" + item["blocks"]


FAIL = ("running", "failed")
RECOVER = ("failed", "finished")


def fail(rid: str) -> Row:
    return (rid, *FAIL)


def recover(rid: str) -> Row:
    return (rid, *RECOVER)


async def watch(watches: WatchStore, channel: str = C1, task: TaskRef = T1, **kw: Any) -> None:
    await watches.add(task=task, channel=channel, created_by="U1", **kw)


# --- one incident ------------------------------------------------------------------------------


async def test_first_failure_posts_once(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"), fail("r2"), ("r3", "running", "finished"))
    assert await pipeline.run_once(T1) == 1
    items = await outbox(redis)
    assert kinds(items) == ["post"]
    assert items[0]["alert"] == keys.alert_state(C1, T1)
    assert "2 registries failing" in items[0]["text"]
    assert "repo-r1" in body(items[0]) and "repo-r3" not in body(items[0])
    assert json.loads(items[0]["blocks"])[0]["type"] == "header"
    assert await redis.smembers(keys.outbox_channels()) == {C1.encode()}
    state = decode_state(await redis.hgetall(keys.alert_state(C1, T1)))
    assert state.incident is not None and len(state.incident.failing) == 2
    assert state.opened_at == clock.now
    assert await pipeline.run_once(T1) == 0  # nothing new
    watched = await watches.get(task=T1, channel=C1)
    assert watched is not None and watched.last_alert_at == clock.now


async def test_later_failure_updates_and_threads(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"))
    await pipeline.run_once(T1)
    await refresh(redis, clock, fail("r2"))
    assert await pipeline.run_once(T1) == 2
    items = await outbox(redis)
    assert kinds(items) == ["post", "update", "thread"]
    assert "2 registries failing" in items[1]["text"]
    assert "repo-r2" in body(items[2]) and "repo-r1" not in body(items[2])
    assert len({i["dedup"] for i in items}) == 3


async def test_recovery_threads_and_updates(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"), fail("r2"))
    await pipeline.run_once(T1)
    await refresh(redis, clock, recover("r1"))
    assert await pipeline.run_once(T1) == 2
    update, thread = (await outbox(redis))[1:]
    assert kinds([update, thread]) == ["update", "thread"]
    assert "repo-r1" in body(thread) and "recovered" in body(thread)
    assert "1 registry failing" in update["text"] and "1 recovered" in update["text"]
    await refresh(redis, clock, recover("r2"))
    await pipeline.run_once(T1)
    assert "all recovered" in (await outbox(redis))[-2]["text"]


async def test_retry_is_thread_news_not_an_alert(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"))
    await pipeline.run_once(T1)
    await refresh(redis, clock, ("r1", "failed", "running"))
    await pipeline.run_once(T1)
    items = await outbox(redis)
    assert kinds(items) == ["post", "update", "thread"]
    assert "is retrying" in body(items[2])
    assert "Retrying" in body(items[1])
    # The retry finishing is the recovery (the incident remembers it was retrying).
    await refresh(redis, clock, ("r1", "running", "finished"))
    await pipeline.run_once(T1)
    assert "recovered" in body((await outbox(redis))[-1])


async def test_removed_is_never_recovered(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"), fail("r2"))
    await pipeline.run_once(T1)
    await refresh(redis, clock, ("r1", "failed", REMOVED))
    assert await pipeline.run_once(T1) == 2
    update, thread = (await outbox(redis))[1:]
    assert "was removed from the task" in body(thread)
    assert "recovered" not in body(thread)
    assert "1 registry failing" in update["text"] and "recovered" not in update["text"]
    assert "Removed from the task" in body(update)


async def test_all_removed_is_not_shown_as_recovered(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"))
    await pipeline.run_once(T1)
    await refresh(redis, clock, ("r1", "failed", REMOVED))
    await pipeline.run_once(T1)
    assert "recovered" not in body((await outbox(redis))[-2]).replace("not recoveries", "")


async def test_failure_after_resolution_opens_a_new_incident(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"))
    await pipeline.run_once(T1)
    await redis.hset(keys.alert_state(C1, T1), mapping={"acked_by": "U0ACK", "parent_ts": "1.1"})
    await refresh(redis, clock, recover("r1"))
    await pipeline.run_once(T1)
    assert "Acknowledged by <@U0ACK>" in body((await outbox(redis))[-2])
    await refresh(redis, clock, fail("r2"))
    assert await pipeline.run_once(T1) == 1
    items = await outbox(redis)
    assert kinds(items) == ["post", "update", "thread", "post"]
    assert "repo-r2" in body(items[-1]) and "repo-r1" not in body(items[-1])
    assert "Acknowledged" not in body(items[-1])
    stored = await redis.hgetall(keys.alert_state(C1, T1))
    # parent_ts stays until the sender posts the new parent: items queued before it still
    # belong to the old message.
    assert b"acked_by" not in stored and stored[b"parent_ts"] == b"1.1"


async def test_recovery_without_an_incident_says_nothing(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, recover("r1"), ("r2", "finished", REMOVED))
    assert await pipeline.run_once(T1) == 0
    assert await redis.get(keys.alert_cursor(T1)) is not None


async def test_one_refresh_one_alert_and_backlogs_in_order(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, *(fail(f"r{i}") for i in range(30)))
    await refresh(redis, clock, fail("s1"))
    await refresh(redis, clock, recover("r0"))
    assert await pipeline.run_once(T1) == 5
    items = await outbox(redis)
    assert kinds(items) == ["post", "update", "thread", "update", "thread"]
    assert "30 registries failing" in items[0]["text"]
    assert "+18 more" in body(items[0])


# --- watches -------------------------------------------------------------------------------


async def test_baseline_before_the_watch_is_not_alerted(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await refresh(redis, clock, fail("r1"))
    clock.now += 1
    await watch(watches)
    assert await pipeline.run_once(T1) == 0
    # The baseline failure recovering is not news either; a new failure is.
    await refresh(redis, clock, recover("r1"))
    assert await pipeline.run_once(T1) == 0
    await refresh(redis, clock, fail("r2"))
    assert await pipeline.run_once(T1) == 1


async def test_each_watch_sees_its_filters(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches, C1, types=frozenset({"Harbor"}))
    await watch(watches, C2, types=frozenset({"Quay"}))
    await refresh(redis, clock, fail("h1"), fail("q1"), types={"q1": "Quay"})
    assert await pipeline.run_once(T1) == 2
    (one,), (two,) = await outbox(redis, C1), await outbox(redis, C2)
    assert "repo-h1" in body(one) and "repo-q1" not in body(one)
    assert "repo-q1" in body(two) and "repo-h1" not in body(two)
    await refresh(redis, clock, fail("q2"), types={"q2": "Quay"})
    await pipeline.run_once(T1)
    assert len(await outbox(redis, C1)) == 1
    assert kinds(await outbox(redis, C2)) == ["post", "update", "thread"]


async def test_name_filter_and_task_scope(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches, C1, task=T2, name="R1")
    await refresh(redis, clock, fail("r1"), fail("x2"), task=T2)
    await refresh(redis, clock, fail("r9"))  # T1: nobody watches it
    assert await pipeline.run_once(T2) == 1
    assert await pipeline.run_once(T1) == 0
    (item,) = await outbox(redis)
    assert "repo-r1" in body(item) and "repo-x2" not in body(item)
    assert item["alert"] == keys.alert_state(C1, T2)


async def test_muted_watch_is_silent_but_advances(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await watches.mute(task=T1, channel=C1, until=clock.now + 600)
    await refresh(redis, clock, fail("r1"))
    assert await pipeline.run_once(T1) == 0
    assert await outbox(redis) == []
    state = decode_state(await redis.hgetall(keys.alert_state(C1, T1)))
    assert list(state.history) == ["r1"] and state.incident is None
    clock.now += 600  # the mute has expired: no replay of what happened during it
    assert await pipeline.run_once(T1) == 0
    await refresh(redis, clock, recover("r1"))
    assert await pipeline.run_once(T1) == 0
    await refresh(redis, clock, fail("r2"))
    assert await pipeline.run_once(T1) == 1


async def test_muted_open_incident_follows_silently(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"))
    await pipeline.run_once(T1)
    await watches.mute(task=T1, channel=C1, until=clock.now + 3600)
    await refresh(redis, clock, recover("r1"))
    assert await pipeline.run_once(T1) == 0
    state = decode_state(await redis.hgetall(keys.alert_state(C1, T1)))
    assert state.incident is not None and state.incident.resolved


async def test_paused_watch_gets_nothing(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches, C1)
    await watch(watches, C2)
    await watches.pause(C1, "is_archived")
    await refresh(redis, clock, fail("r1"))
    assert await pipeline.run_once(T1) == 1
    assert await outbox(redis, C1) == []
    assert kinds(await outbox(redis, C2)) == ["post"]
    assert await redis.smembers(keys.outbox_channels()) == {C2.encode()}


async def test_rewatch_after_unwatch_starts_a_new_incident(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"))
    await pipeline.run_once(T1)
    await watches.remove(task=T1, channel=C1)
    clock.now += 120  # more than replicas' clocks may disagree
    await watch(watches)
    await refresh(redis, clock, ("r1", "failed", "finished"), fail("r2"))
    await pipeline.run_once(T1)
    items = await outbox(redis)
    assert kinds(items) == ["post", "post"]
    assert "repo-r1" not in body(items[1])


async def test_rewatch_forgets_the_old_state_once(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"))
    await pipeline.run_once(T1)
    await watches.remove(task=T1, channel=C1)
    clock.now += 120  # more than replicas' clocks may disagree
    await watch(watches)
    await watches.mute(task=T1, channel=C1, until=clock.now + 3600)
    for row in (fail("r2"), recover("r2"), fail("r2")):
        await refresh(redis, clock, row)
        await pipeline.run_once(T1)
    state = decode_state(await redis.hgetall(keys.alert_state(C1, T1)))
    assert state.incident is None and len(state.history["r2"]) == 2


# --- flapping --------------------------------------------------------------------------------


async def test_flapping_is_summarised_not_realerted(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    for _ in range(3):
        await refresh(redis, clock, fail("r1"))
        await refresh(redis, clock, recover("r1"))
    await pipeline.run_once(T1)
    assert kinds(await outbox(redis)).count("post") == 3
    await refresh(redis, clock, fail("r1"))  # the fourth failure within the hour
    assert await pipeline.run_once(T1) == 2
    update, thread = (await outbox(redis))[-2:]
    assert kinds([update, thread]) == ["update", "thread"]
    assert "4 times in the last hour" in body(thread) and "flapping" in body(thread)
    assert "flapping" in body(update)
    clock.now += 3600  # an hour later it alerts again
    await refresh(redis, clock, recover("r1"))
    await refresh(redis, clock, fail("r1"))
    await pipeline.run_once(T1)
    assert kinds(await outbox(redis))[-1] == "post"


# --- replicas ------------------------------------------------------------------------------


async def test_restart_realerts_nothing(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    await refresh(redis, clock, fail("r1"))
    await pipeline.run_once(T1)
    again = AlertPipeline(redis, watches=WatchStore(redis, clock=clock), clock=clock)
    assert await again.run_once(T1) == 0
    await refresh(redis, clock, fail("r2"))
    assert await again.run_once(T1) == 2
    assert kinds(await outbox(redis)) == ["post", "update", "thread"]


async def test_two_replicas_queue_each_item_once(
    redis: aioredis.Redis, redis_factory: RedisFactory, watches: WatchStore, clock: Clock
) -> None:
    await watch(watches, C1)
    await watch(watches, C2, types=frozenset({"Harbor"}))
    replicas = []
    for _ in range(2):
        conn = redis_factory()
        replicas.append(AlertPipeline(conn, watches=WatchStore(conn, clock=clock), clock=clock))
    total = 0
    stream = keys.mirror_changes(T1)
    written: dict[bytes, dict[bytes, bytes]] = {}  # the replicas trim what they handled
    for i in range(12):
        await refresh(redis, clock, fail(f"r{i}") if i % 3 else recover(f"r{i - 1}"))
        written.update(await redis.xrange(stream))
        counts = await asyncio.gather(*(r.run_once(T1) for r in replicas for _ in range(3)))
        total += sum(counts)
    items = await outbox(redis, C1) + await outbox(redis, C2)
    dedups = [i["dedup"] for i in items]
    assert len(dedups) == len(set(dedups)) == total
    # Same as one replica alone would have queued, from the same entries (same ids).
    await redis.delete(keys.outbox(C1), keys.outbox(C2), keys.alert_cursor(T1), stream)
    await redis.delete(keys.alert_state(C1, T1), keys.alert_state(C2, T1))
    for entry_id in sorted(written, key=lambda e: tuple(map(int, e.split(b"-")))):
        await redis.xadd(stream, written[entry_id], id=entry_id)  # type: ignore[arg-type]
    alone = AlertPipeline(redis, watches=watches, clock=clock)
    assert await alone.run_once(T1) == total
    assert sorted(i["dedup"] for i in await outbox(redis, C1) + await outbox(redis, C2)) == sorted(
        dedups
    )


# --- the change stream is trimmed to the cursor ---------------------------------------------


async def stream_ids(redis: aioredis.Redis, task: TaskRef = T1) -> list[str]:
    return [eid.decode() for eid, _ in await redis.xrange(keys.mirror_changes(task))]


async def test_a_busy_task_keeps_only_its_unalerted_changes(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    longest, queued = 0, 0
    for i in range(150):  # 600 changes: without trimming the stream would hold them all
        rows = [fail(f"r{j}") if i % 2 == 0 else recover(f"r{j}") for j in range(4)]
        await refresh(redis, clock, *rows)
        longest = max(longest, await redis.xlen(keys.mirror_changes(T1)))
        queued += await pipeline.run_once(T1)
        # Everything handled is gone but the cursor's own entry.
        cursor = (await redis.get(keys.alert_cursor(T1))).decode()
        assert await stream_ids(redis) == [cursor]
    assert longest == 4 + 1  # one refresh's changes, and the last one handled
    assert queued > 0  # the alerts kept up: flips were alerted all along


class SavesDuringTheRound(WatchStore):
    """A refresh saved while a pipeline round finishes: after its MULTI, before its trim."""

    saved: list[str]

    async def note_alert(self, *, task: TaskRef, channel: str, at: float) -> None:
        await super().note_alert(task=task, channel=channel, at=at)
        fields = {"id": "late", "name": "repo-late", "type": "Harbor", "old": "running"}
        fields |= {"new": "failed", "reason": "disk full", "at": repr(at + 1)}
        self.saved.append((await self._redis.xadd(keys.mirror_changes(task), fields)).decode())


async def test_an_entry_saved_during_a_round_is_not_trimmed_and_alerts_next(
    redis: aioredis.Redis, clock: Clock
) -> None:
    watches = SavesDuringTheRound(redis, clock=clock)
    watches.saved = []
    pipeline = AlertPipeline(redis, watches=watches, clock=clock)
    await watch(watches)
    await refresh(redis, clock, fail("r1"))

    assert await pipeline.run_once(T1) == 1  # the post; the late entry came after its read
    [late] = watches.saved
    cursor = (await redis.get(keys.alert_cursor(T1))).decode()
    assert await stream_ids(redis) == [cursor, late]  # trimmed to the cursor, not past it

    assert await pipeline.run_once(T1) == 2  # update and thread for the late failure
    assert "repo-late" in body((await outbox(redis))[-1])


class WatchedDuringTheRound(WatchStore):
    """A channel starts watching while a pipeline round reads, and a refresh then saves a
    failure: after the round read the watches, before its EXEC."""

    clock: Clock
    done = False

    async def of_task(self, task: TaskRef) -> list[Watch]:
        found = await super().of_task(task)
        if not self.done:
            self.done = True
            self.clock.now += 1  # after r1 failed: r1 is the new watch's baseline
            await self.add(task=task, channel=C2, created_by="U2")
            await refresh(self._redis, self.clock, fail("r2"))
        return found


async def test_a_watch_added_during_a_round_hears_of_what_the_round_passes(
    redis: aioredis.Redis, clock: Clock
) -> None:
    watches = WatchedDuringTheRound(redis, clock=clock)
    watches.clock = clock
    pipeline = AlertPipeline(redis, watches=watches, clock=clock)
    await watch(watches)  # C1
    await refresh(redis, clock, fail("r1"))

    await pipeline.run_once(T1)
    # The new channel's watch began before r2 failed: it must hear of r2, although the round
    # that moved the cursor past r2 began before the watch existed.
    assert kinds(await outbox(redis, C2)) == ["post"]
    assert "repo-r2" in body((await outbox(redis, C2))[0])
    assert "repo-r1" not in body((await outbox(redis, C2))[0])  # its baseline
    assert kinds(await outbox(redis, C1)) == ["post", "update", "thread"]  # r1, then r2
    assert "repo-r2" in body((await outbox(redis, C1))[-1])


async def test_a_task_nobody_watches_is_left_to_its_cap_and_a_later_watch_alerts(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    for i in range(3):  # nobody watches: no cursor, nothing trimmed
        await refresh(redis, clock, fail(f"old{i}"))
    assert len(await stream_ids(redis)) == 3 and await redis.get(keys.alert_cursor(T1)) is None
    clock.now += 1
    await watch(watches, C1)
    assert await pipeline.run_once(T1) == 0  # those changes are the watch's baseline
    assert len(await stream_ids(redis)) == 1

    await refresh(redis, clock, fail("r1"))
    assert await pipeline.run_once(T1) == 1
    clock.now += 1
    await watch(watches, C2)  # a second channel, after the stream was trimmed
    await refresh(redis, clock, fail("r2"))
    assert await pipeline.run_once(T1) == 3  # C1: update and thread; C2: its first post
    [post] = await outbox(redis, C2)
    assert post["kind"] == "post" and "repo-r2" in body(post) and "repo-r1" not in body(post)
    assert len(await stream_ids(redis)) == 1


async def test_replicas_with_a_busy_writer_trim_nothing_unhandled(
    redis: aioredis.Redis, redis_factory: RedisFactory, watches: WatchStore, clock: Clock
) -> None:
    """Every failure written while two replicas race to handle and trim is alerted once."""
    await watch(watches)
    replicas = []
    for _ in range(2):
        conn = redis_factory()
        replicas.append(AlertPipeline(conn, watches=WatchStore(conn, clock=clock), clock=clock))
    done = asyncio.Event()

    async def write() -> None:
        for i in range(40):
            await refresh(redis, clock, fail(f"r{i}"))
            await asyncio.sleep(0)  # let the replicas in between refreshes
        done.set()

    async def handle(replica: AlertPipeline) -> None:
        while not done.is_set():
            await replica.run_once(T1)
            await asyncio.sleep(0)
        await replica.run_once(T1)

    await asyncio.gather(write(), *(handle(r) for r in replicas))
    text = " ".join(body(i) for i in await outbox(redis))
    assert all(f"repo-r{i}`" in text for i in range(40))
    assert len(await stream_ids(redis)) == 1


async def test_run_loop_wakes_on_new_entries(
    redis: aioredis.Redis, watches: WatchStore, pipeline: AlertPipeline, clock: Clock
) -> None:
    await watch(watches)
    stop = asyncio.Event()
    loop = asyncio.create_task(pipeline.run(stop))
    try:
        await until(lambda: blocked_in_xread(redis), what="the loop waiting for entries")
        await refresh(redis, clock, fail("r1"))
        await until(lambda: has_items(redis, 1), what="the post")
        await refresh(redis, clock, fail("r2"))
        await until(lambda: has_items(redis, 3), what="the update and the thread line")
    finally:
        stop.set()
        await asyncio.wait_for(loop, 5)
    assert kinds(await outbox(redis)) == ["post", "update", "thread"]


async def blocked_in_xread(redis: aioredis.Redis) -> bool:
    """Some client of this Redis is blocked in XREAD (``CLIENT LIST`` flag ``b``)."""
    clients = await redis.client_list()
    return any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in clients)


async def has_items(redis: aioredis.Redis, count: int) -> bool:
    return len(await outbox(redis)) >= count


class CountingRedis(aioredis.Redis):
    """A client that counts the commands it was asked to run, answered or not: each round of
    the pipeline's loop begins with one."""

    commands = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands += 1
        return await super().execute_command(*args, **options)


async def test_a_redis_outage_is_logged_once_and_its_end_once(
    redis_server: EmbeddedRedis, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    client = CountingRedis.from_url(redis_server.url)
    own_watches = WatchStore(client, clock=clock)
    await watch(own_watches)
    pipeline = AlertPipeline(client, watches=own_watches, clock=clock, retry_delay=0.05)
    stop = asyncio.Event()
    loop = asyncio.create_task(pipeline.run(stop))
    try:
        await until(lambda: client.commands > 1, what="the loop running")
        redis_server.stop()
        await until(lambda: "alerting paused" in caplog.text, what="the outage noticed")
        tried = client.commands
        await until(lambda: client.commands >= tried + 3, what="three more rounds, all failing")
        redis_server.start()
        await until(lambda: "alerting resumed" in caplog.text, what="the end noticed")
    finally:
        stop.set()
        await asyncio.wait_for(loop, 5)
        await client.aclose()
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.alerting.pipeline"]
    assert len([m for m in lines if m.startswith("alerting paused")]) == 1
    assert len([m for m in lines if m.startswith("alerting resumed")]) == 1


# --- pure parts ------------------------------------------------------------------------------


def _flip(kind: FlipKind, rid: str, at: float = 1.0) -> Flip:
    return Flip(kind=kind, registry_id=rid, name=f"n-{rid}", type="Harbor", reason="x", at=at)


def test_incident_json_round_trip() -> None:
    incident = Incident(
        latest={"a": _flip(FlipKind.FAILURE, "a"), "b": _flip(FlipKind.RETRY, "b", 2.5)},
        flapping=frozenset({"a"}),
    )
    assert decode_incident(encode_incident(incident)) == incident
    assert decode_state({b"incident": b"{not json"}) == AlertState()


def test_refreshes_group_by_at() -> None:
    def entry(eid: str, at: float) -> tuple[str, Change]:
        return eid, Change("r", "n", "t", "running", "failed", "", at)

    entries = [entry("1-0", 1.0), entry("1-1", 1.0), entry("2-0", 2.0), entry("3-0", 1.0)]
    assert [[e for e, _ in g] for g in refreshes(entries)] == [["1-0", "1-1"], ["2-0"], ["3-0"]]


@pytest.mark.parametrize(
    ("incident", "plan", "loud", "post", "news"),
    [
        (None, AlertPlan(failures=(_flip(FlipKind.FAILURE, "a"),)), True, True, False),
        (None, AlertPlan(failures=(_flip(FlipKind.FAILURE, "a"),)), False, False, False),
        (None, AlertPlan(recoveries=(_flip(FlipKind.RECOVERY, "a"),)), True, False, False),
        (
            Incident(latest={"a": _flip(FlipKind.FAILURE, "a")}),
            AlertPlan(recoveries=(_flip(FlipKind.RECOVERY, "b"),)),
            True,
            False,
            False,
        ),
        (
            Incident(latest={"a": _flip(FlipKind.FAILURE, "a")}),
            AlertPlan(removed=(_flip(FlipKind.REMOVED, "a"),)),
            True,
            False,
            True,
        ),
        (
            Incident(latest={"a": _flip(FlipKind.RECOVERY, "a")}),
            AlertPlan(flapping=(_flip(FlipKind.FAILURE, "a"),)),
            True,
            False,
            True,
        ),
        (
            Incident(latest={"a": _flip(FlipKind.RECOVERY, "a")}),
            AlertPlan(retries=(_flip(FlipKind.RETRY, "a"),)),
            True,
            False,
            False,
        ),
    ],
)
def test_advance_rules(
    incident: Incident | None, plan: AlertPlan, loud: bool, post: bool, news: bool
) -> None:
    step = advance(AlertState(incident=incident), plan, now=5.0, loud=loud)
    assert step.post is post
    assert (step.news is not None) is news


def _watch(channel: str, created_at: float) -> Watch:
    return Watch(task=T1, channel=channel, created_by="U1", created_at=created_at)


def _entry(eid: str, rid: str, old: str, new: str, at: float) -> tuple[str, Change]:
    return eid, Change(rid, f"repo-{rid}", "Harbor", old, new, "", at)


def test_plan_drops_a_state_left_by_an_earlier_watch_and_starts_afresh() -> None:
    old = AlertState(
        incident=Incident(latest={"a": _flip(FlipKind.FAILURE, "a")}),
        acked_by="U0ACK",
        opened_at=1000.0,
    )
    watch = _watch(C1, created_at=1000.0 + 61)  # more than the clock skew later
    writes = plan_writes(T1, [watch], [_entry("5-0", "b", *FAIL, at=2000.0)], {C1: old}, now=2001.0)
    assert writes.cursor == "5-0"
    assert writes.dropped == {C1}
    new = writes.states[C1]
    assert new.opened_at == 2001.0 and new.acked_by is None
    assert new.incident is not None and set(new.incident.latest) == {"b"}
    assert [(i.channel, i.kind) for i in writes.items] == [(C1, "post")]


def test_plan_keeps_a_state_its_own_watch_opened() -> None:
    state = AlertState(
        incident=Incident(latest={"a": _flip(FlipKind.FAILURE, "a")}), opened_at=1000.0
    )
    writes = plan_writes(
        T1,
        [_watch(C1, created_at=1000.0 + 59)],  # within the clock skew: the same watch
        [_entry("5-0", "a", *RECOVER, at=2000.0)],
        {C1: state},
        now=2001.0,
    )
    assert writes.dropped == frozenset()
    assert [i.kind for i in writes.items] == ["update", "thread"]


def test_plan_skips_a_watchs_baseline_and_notes_each_flip_once() -> None:
    entries = [_entry("1-0", "a", *FAIL, at=100.0), _entry("2-0", "b", *FAIL, at=200.0)]
    old, new = _watch(C1, created_at=50.0), _watch(C2, created_at=150.0)
    fresh = {C1: AlertState(), C2: AlertState()}
    writes = plan_writes(T1, [old, new], entries, fresh, now=300.0)
    assert writes.cursor == "2-0"
    assert [(f.registry_id, f.kind) for f in writes.flips] == [
        ("a", FlipKind.FAILURE),
        ("b", FlipKind.FAILURE),
    ]
    assert [(i.channel, i.kind) for i in writes.items] == [
        (C1, "post"),
        (C1, "update"),
        (C1, "thread"),
        (C2, "post"),
    ]
    c2 = writes.states[C2].incident
    assert c2 is not None and set(c2.latest) == {"b"}, "a failed before C2 watched"
