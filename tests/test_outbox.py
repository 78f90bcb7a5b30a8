"""The outbox on a real Redis and the Slack stand-in over HTTP: in order per channel, paced,
429s and errors survived per channel, at most one duplicate and never a loss, across
replicas, a killed sender and a Redis restart. Times are compressed (a fake clock, or
intervals of a few hundredths of a second)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.lock import Lock

from bot.alerting.outbox import Item, Kind, OutboxSender, enqueue, web_client
from bot.alerting.state import parent_ts
from bot.sandbox.slack_standin import Call, Scripted, SlackStandIn
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from tests.plugins.redis_server import RedisFactory
from tests.support import Clock, until

ALERT = "hss:alert:C1:p:-:t1"


class TimedStandIn(SlackStandIn):
    """The stand-in, also noting when each call arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    async def _record(self, call: Call) -> None:
        self.arrivals.append(time.monotonic())
        await super()._record(call)


class Parked:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, channel: str, reason: str) -> None:
        self.calls.append((channel, reason))


@pytest.fixture
async def slack() -> AsyncIterator[TimedStandIn]:
    standin = TimedStandIn()
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()


@pytest.fixture
def make_sender(redis: aioredis.Redis, slack: TimedStandIn) -> Callable[..., OutboxSender]:
    def make(client: aioredis.Redis | None = None, **kwargs: Any) -> OutboxSender:
        kwargs.setdefault("on_permanent", Parked())
        kwargs.setdefault("min_interval", 0.0)
        client_ = web_client(token="xoxb-test", base_url=f"{slack.url}/api/")
        return OutboxSender(client or redis, slack=client_, **kwargs)

    return make


async def put(
    redis: aioredis.Redis,
    channel: str,
    text: str,
    *,
    kind: Kind = "post",
    alert: str = ALERT,
    dedup: str | None = None,
) -> None:
    await enqueue(
        redis,
        channel=channel,
        kind=kind,
        alert_key=alert,
        text=text,
        blocks=None,
        dedup=dedup or f"{channel}:{text}",
    )


def texts(slack: SlackStandIn, channel: str) -> list[str]:
    return [c.body["text"] for c in slack.calls if c.kind == "api" and c.body["channel"] == channel]


async def drain(
    sender: OutboxSender, until: Callable[[], bool], clock: Clock | None = None
) -> None:
    for _ in range(500):
        await sender.run_once()
        if until():
            return
        if clock is not None:
            clock.now += 1.0
        else:
            await asyncio.sleep(0.01)
    raise AssertionError("the outbox did not drain")


# --- enqueue ---------------------------------------------------------------------------------


async def test_enqueue_joins_the_callers_multi(redis: aioredis.Redis) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        pipe.hset(ALERT, "incident", "{}")
        assert (
            await enqueue(
                pipe,
                channel="C1",
                kind="post",
                alert_key=ALERT,
                text="hi",
                blocks=[{"type": "divider"}],
                dedup="d1",
            )
            is None
        )
        await pipe.execute()
    entries = await redis.xrange(keys.outbox("C1"))
    assert len(entries) == 1
    assert entries[0][1][b"blocks"] == b'[{"type":"divider"}]'
    assert await redis.smembers(keys.outbox_channels()) == {b"C1"}
    with pytest.raises(ValueError, match="kind"):
        await enqueue(
            redis,
            channel="C1",
            kind="edit",  # type: ignore[arg-type]
            alert_key=ALERT,
            text="x",
            blocks=None,
            dedup="d2",
        )


# --- order, kinds, pace ------------------------------------------------------------------------


async def test_in_order_per_channel_and_the_set_empties(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    for i in range(5):
        await put(redis, "C1", f"a{i}")
        await put(redis, "C2", f"b{i}")
    sender = make_sender()
    await drain(sender, lambda: len(slack.calls) == 10)
    await sender.run_once()
    assert texts(slack, "C1") == [f"a{i}" for i in range(5)]
    assert texts(slack, "C2") == [f"b{i}" for i in range(5)]
    assert sender.stats.sent == 10
    assert await redis.smembers(keys.outbox_channels()) == set()
    assert not await redis.exists(keys.outbox("C1"), keys.outbox("C2"))


async def test_pace_per_channel(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    for i in range(5):
        await put(redis, "C1", f"a{i}")
    await put(redis, "C2", "b0")
    stop = asyncio.Event()
    runner = asyncio.create_task(make_sender(min_interval=0.05, poll_interval=0.01).run(stop))
    await slack.wait_for(lambda calls: len(calls) == 6)
    stop.set()
    await runner
    c1 = [t for t, c in zip(slack.arrivals, slack.calls, strict=True) if c.body["channel"] == "C1"]
    gaps = [b - a for a, b in itertools.pairwise(c1)]
    assert min(gaps) >= 0.05
    assert texts(slack, "C1") == [f"a{i}" for i in range(5)]
    # the other channel did not queue behind C1's pace
    assert [c.body["channel"] for c in slack.calls].index("C2") <= 1


async def test_post_update_thread_use_the_parent_ts(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    await put(redis, "C1", "alert")
    await put(redis, "C1", "alert, updated", kind="update")
    await put(redis, "C1", "a thread line", kind="thread")
    clock = Clock()
    await drain(make_sender(clock=clock, min_interval=1.0), lambda: len(slack.calls) == 3, clock)
    post, update, thread = slack.calls
    assert (post.name, update.name, thread.name) == (
        "chat.postMessage",
        "chat.update",
        "chat.postMessage",
    )
    assert "thread_ts" not in post.body
    ts = await parent_ts(redis, ALERT)
    assert ts is not None
    assert update.body["ts"] == ts
    assert thread.body["thread_ts"] == ts


async def test_follow_up_without_parent_waits_then_becomes_the_parent(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    await put(redis, "C1", "update of a lost post", kind="update")
    await put(redis, "C1", "later post", alert="hss:alert:C1:other")
    clock = Clock()
    sender = make_sender(clock=clock, orphan_after=60.0)
    for _ in range(3):
        assert await sender.run_once() == 0  # waits, and nothing jumps the queue
        clock.now += 10
    await redis.hset(ALERT, "parent_ts", "1700000000.000099")
    assert await sender.run_once() == 2
    assert [(c.name, c.body.get("ts")) for c in slack.calls] == [
        ("chat.update", "1700000000.000099"),
        ("chat.postMessage", None),
    ]
    # a parent that can no longer come: after orphan_after the update is posted as the parent
    await put(redis, "C2", "orphan", kind="update", alert="hss:alert:C2:t")
    assert await sender.run_once() == 0
    clock.now += 61
    assert await sender.run_once() == 1
    assert slack.calls[-1].name == "chat.postMessage"
    assert await parent_ts(redis, "hss:alert:C2:t") is not None


# --- Slack errors ------------------------------------------------------------------------------


async def test_429_holds_only_that_channel_then_delivers_once(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    clock = Clock()
    sender = make_sender(clock=clock, min_interval=1.0)
    await put(redis, "C1", "a0")
    await put(redis, "C1", "a1")
    slack.fail_next(
        "chat.postMessage",
        Scripted(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "30"}),
    )
    assert await sender.run_once() == 0
    assert sender.stats.throttled == 1
    await put(redis, "C2", "b0")
    await put(redis, "C2", "b1")
    for _ in range(5):
        clock.now += 1.5
        await sender.run_once()
    assert texts(slack, "C2") == ["b0", "b1"]
    assert texts(slack, "C1") == ["a0"]  # only the refused attempt
    clock.now = 1031.0
    await drain(sender, lambda: len(texts(slack, "C1")) == 3, clock)
    assert texts(slack, "C1") == ["a0", "a0", "a1"]
    assert sender.stats.sent == 4


async def test_transient_errors_back_off_and_deliver(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    clock = Clock()
    sender = make_sender(clock=clock, backoff=2.0)
    await put(redis, "C1", "a0")
    slack.fail_next(
        "chat.postMessage", Scripted(500), Scripted(200, {"ok": False, "error": "internal_error"})
    )
    assert await sender.run_once() == 0
    assert await sender.run_once() == 0  # 2 s back-off
    clock.now += 2
    assert await sender.run_once() == 0  # second failure: 4 s back-off
    clock.now += 3
    assert await sender.run_once() == 0
    clock.now += 1
    assert await sender.run_once() == 1
    assert sender.stats.retried == 2
    assert texts(slack, "C1") == ["a0"] * 3


async def test_item_refused_by_slack_is_dropped_not_blocking(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    sender = make_sender()
    await put(redis, "C1", "bad")
    await put(redis, "C1", "good", alert="hss:alert:C1:other")
    slack.fail_next("chat.postMessage", Scripted(200, {"ok": False, "error": "invalid_blocks"}))
    await drain(sender, lambda: len(slack.calls) == 2)
    assert texts(slack, "C1") == ["bad", "good"]
    assert (sender.stats.failed, sender.stats.sent) == (1, 1)


async def test_permanent_error_parks_the_channel_until_resumed(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    parked = Parked()
    sender = make_sender(on_permanent=parked)
    await put(redis, "C1", "a0")
    await put(redis, "C1", "a1")
    slack.fail_next("chat.postMessage", Scripted(200, {"ok": False, "error": "not_in_channel"}))
    assert await sender.run_once() == 0
    assert parked.calls == [("C1", "not_in_channel")]
    assert await sender.parked() == {"C1": "not_in_channel"}
    assert await sender.run_once() == 0
    assert len(slack.calls) == 1
    assert await redis.xlen(keys.outbox("C1")) == 2  # kept
    await sender.resume("C1")
    await drain(sender, lambda: len(slack.calls) == 3)
    assert texts(slack, "C1") == ["a0", "a0", "a1"]
    assert await sender.parked() == {}


async def test_item_queued_twice_is_sent_once(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    sender = make_sender()
    await put(redis, "C1", "a0", dedup="flip-1")
    await put(redis, "C1", "a0", dedup="flip-1")
    await put(redis, "C1", "a1")
    await drain(sender, lambda: len(slack.calls) == 2)
    await sender.run_once()
    assert texts(slack, "C1") == ["a0", "a1"]
    assert sender.stats.skipped == 1


async def test_one_channels_failure_hides_no_other_and_stops_none(
    redis: aioredis.Redis,
    slack: TimedStandIn,
    make_sender: Callable[..., OutboxSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokeC1(Exception):
        pass

    class BrokeC2(Exception):
        pass

    async def broken(channel: str, item: Item) -> None:
        if channel == "C1":
            raise BrokeC1
        if channel == "C2":
            raise BrokeC2

    for channel in ("C1", "C2", "C3"):
        await put(redis, channel, f"{channel}-0")
        await put(redis, channel, f"{channel}-1")
    sender = make_sender(after_send=broken)
    with pytest.raises(ExceptionGroup) as failed:
        await sender.run_once()
    found = {type(e): e for e in failed.value.exceptions}
    assert found.keys() == {BrokeC1, BrokeC2}
    assert found[BrokeC1].__notes__ == ["outbox channel C1"]
    assert found[BrokeC2].__notes__ == ["outbox channel C2"]
    assert texts(slack, "C3") == ["C3-0", "C3-1"], "the healthy channel was served whole"
    assert await redis.xlen(keys.outbox("C3")) == 0

    def logged() -> set[type[BaseException] | None]:
        lines = (r for r in caplog.records if r.getMessage() == "outbox: send round failed")
        return {r.exc_info[0] if r.exc_info else None for r in lines}

    stop = asyncio.Event()
    runner = asyncio.create_task(sender.run(stop))
    try:
        for _ in range(500):
            if logged() >= {BrokeC1, BrokeC2}:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await runner
    assert logged() >= {BrokeC1, BrokeC2}, "each failure logged with its own traceback"


# --- replicas, a killed sender, a Redis restart ------------------------------------------------


async def outboxes_empty(redis: aioredis.Redis, channels: list[str]) -> bool:
    return not any([await redis.xlen(keys.outbox(channel)) for channel in channels])


async def test_two_replicas_never_duplicate_or_reorder(
    redis: aioredis.Redis,
    redis_factory: RedisFactory,
    slack: TimedStandIn,
    make_sender: Callable[..., OutboxSender],
) -> None:
    channels = [f"C{i}" for i in range(4)]
    for i in range(15):
        for channel in channels:
            await put(redis, channel, f"{channel}-{i}")
    senders = [
        make_sender(redis_factory(), min_interval=0.005, poll_interval=0.005) for _ in range(2)
    ]
    stop = asyncio.Event()
    runners = [asyncio.create_task(s.run(stop)) for s in senders]
    await slack.wait_for(lambda calls: len(calls) == 60, timeout=20)
    # Every item was deleted after Slack took it: nothing is left to send again.
    await until(lambda: outboxes_empty(redis, channels), what="the outboxes emptied")
    stop.set()
    await asyncio.gather(*runners)
    for channel in channels:
        assert texts(slack, channel) == [f"{channel}-{i}" for i in range(15)]
    assert sum(s.stats.sent for s in senders) == 60


async def test_killed_between_send_and_delete_duplicates_at_most_once(
    redis: aioredis.Redis,
    redis_factory: RedisFactory,
    slack: TimedStandIn,
    make_sender: Callable[..., OutboxSender],
) -> None:
    for i in range(3):
        await put(redis, "C1", f"a{i}")

    class Killed(Exception):
        pass

    async def die(channel: str, item: Item) -> None:
        raise Killed

    with pytest.raises(ExceptionGroup) as died:
        await make_sender(redis_factory(), after_send=die).run_once()
    [killed] = died.value.exceptions
    assert isinstance(killed, Killed)
    assert texts(slack, "C1") == ["a0"]
    survivor = make_sender(redis_factory())
    await drain(survivor, lambda: len(slack.calls) == 4)
    await survivor.run_once()
    assert texts(slack, "C1") == ["a0", "a0", "a1", "a2"]


async def test_dead_replicas_lease_is_taken_over_when_it_expires(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    await put(redis, "C1", "a0")
    dead = Lock(redis, keys.outbox_lease("C1"), timeout=0.3, thread_local=False)
    assert await dead.acquire(blocking=False)  # never released, like a killed replica's
    sender = make_sender()
    assert await sender.run_once() == 0
    await asyncio.sleep(0.35)
    assert await sender.run_once() == 1


async def test_lease_is_renewed_while_a_channel_is_served(
    redis: aioredis.Redis, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    await put(redis, "C1", "a0")
    seen: list[bool] = []

    async def slow(channel: str, item: Item) -> None:
        await asyncio.sleep(0.5)  # longer than the lease: it must still be ours
        seen.append(bool(await redis.exists(keys.outbox_lease(channel))))

    assert await make_sender(lease_timeout=0.3, after_send=slow).run_once() == 1
    assert seen == [True]
    assert not await redis.exists(keys.outbox_lease("C1"))


async def test_redis_restart_loses_nothing(
    tmp_path: Path, slack: TimedStandIn, make_sender: Callable[..., OutboxSender]
) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "persistent", persistent=True)
    server.start()
    client = aioredis.Redis.from_url(server.url)
    try:
        for i in range(6):
            await put(client, "C1", f"a{i}")
        sender = make_sender(client, min_interval=0.05, poll_interval=0.01)
        stop = asyncio.Event()
        runner = asyncio.create_task(sender.run(stop))
        await slack.wait_for(lambda calls: len(calls) >= 2)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(0.1)
        await asyncio.to_thread(server.start)
        await slack.wait_for(lambda calls: texts(slack, "C1")[-1:] == ["a5"], timeout=20)
        stop.set()
        await runner
    finally:
        await client.aclose()
        server.stop()
    sent = texts(slack, "C1")
    assert sorted(set(sent)) == [f"a{i}" for i in range(6)]  # nothing lost, in order
    assert sent == sorted(sent)
    assert len(sent) <= 7  # at most one duplicate
