"""The alert hash on a real Redis, through its one owner (``bot.alerting.state``): written
whole by the pipeline, acknowledged by the button, its parent message noted by the outbox."""

from __future__ import annotations

import redis.asyncio as aioredis

from bot.alerting.flips import Flip, FlipKind, Incident
from bot.alerting.state import (
    AlertState,
    ack,
    parent_ts,
    queue_parent_ts,
    queue_reset,
    queue_state,
    read_state,
)
from bot.models import TaskRef
from bot.storage import keys

KEY = keys.alert_state("C0001", TaskRef(project_id="p", task_id="t1"))
FLIP = Flip(FlipKind.FAILURE, "r1", "repo <1>", "Harbor", "pull timeout", 1000.5, "running")
OPEN = AlertState(
    incident=Incident(latest={"r1": FLIP}), history={"r1": [1000.5]}, opened_at=1000.5
)


async def write(redis: aioredis.Redis, state: AlertState) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        queue_state(pipe, KEY, state)
        await pipe.execute()


async def test_a_state_written_whole_reads_back_the_same(redis: aioredis.Redis) -> None:
    await write(redis, OPEN)
    assert await read_state(redis, KEY) == OPEN
    assert await read_state(redis, "hss:alert:none") == AlertState()


async def test_an_ack_shows_until_a_new_incident_is_written(redis: aioredis.Redis) -> None:
    await write(redis, OPEN)
    await ack(redis, KEY, "U0ACK")
    acked = await read_state(redis, KEY)
    assert acked.acked_by == "U0ACK" and acked.incident == OPEN.incident
    await write(redis, acked)  # news about the same incident keeps the ack
    assert (await read_state(redis, KEY)).acked_by == "U0ACK"
    await write(redis, AlertState(incident=Incident(), history={}, opened_at=2000.0))
    assert (await read_state(redis, KEY)).acked_by is None
    assert not await redis.hexists(KEY, "acked_by")


async def test_the_parent_ts_outlives_a_state_write_but_not_a_reset(redis: aioredis.Redis) -> None:
    assert await parent_ts(redis, KEY) is None
    async with redis.pipeline(transaction=True) as pipe:
        queue_parent_ts(pipe, KEY, "1700000000.000100")
        await pipe.execute()
    await write(redis, OPEN)
    assert await parent_ts(redis, KEY) == "1700000000.000100"
    async with redis.pipeline(transaction=True) as pipe:
        queue_reset(pipe, KEY)
        await pipe.execute()
    assert await parent_ts(redis, KEY) is None
    assert await read_state(redis, KEY) == AlertState()


async def test_an_unreadable_state_is_replaced_whole(redis: aioredis.Redis) -> None:
    await redis.hset(KEY, mapping={"incident": "{not json", "history": "{}", "opened_at": "1"})
    assert await read_state(redis, KEY) == AlertState()
    await write(redis, AlertState(history={"r1": [5.0]}))
    assert await read_state(redis, KEY) == AlertState(history={"r1": [5.0]})
    assert not await redis.hexists(KEY, "incident")
