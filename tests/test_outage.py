"""The outage gate and the outage errors, on a real Redis that is stopped and started."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from bot.errors import StoreError
from bot.storage.embedded import EmbeddedRedis
from bot.storage.outage import (
    PING_FAILED,
    REDIS_OUTAGE,
    STORE_UNAVAILABLE,
    OutageGate,
    RedisHealth,
    class_name,
)
from bot.storage.watch_store import WatchStore
from tests.plugins.redis_server import RedisFactory

log = logging.getLogger("tests.outage")


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == log.name]


def gate(detail: Callable[[BaseException], object] = class_name) -> OutageGate:
    return OutageGate(logger=log, started="paused (%s)", ended="resumed", detail=detail)


async def ping_through(client: aioredis.Redis, outage: OutageGate) -> None:
    """One round of a loop that waits out outages."""
    try:
        await client.ping()
    except REDIS_OUTAGE as exc:
        outage.failed(exc)
    else:
        outage.succeeded()


async def test_a_real_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    redis_server: EmbeddedRedis, redis_factory: RedisFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    client = redis_factory(redis_server.url, socket_connect_timeout=1)
    outage = gate()
    for _ in range(3):
        await ping_through(client, outage)
    assert lines(caplog) == [] and not outage.down

    await asyncio.to_thread(redis_server.stop)
    for _ in range(3):
        await ping_through(client, outage)
    assert outage.down
    assert lines(caplog) == [(logging.WARNING, "paused (ConnectionError)")]

    await asyncio.to_thread(redis_server.start)
    for _ in range(3):
        await ping_through(client, outage)
    assert not outage.down
    assert lines(caplog)[1:] == [(logging.INFO, "resumed")]

    await asyncio.to_thread(redis_server.stop)
    await ping_through(client, outage)
    assert [level for level, _ in lines(caplog)] == [logging.WARNING, logging.INFO, logging.WARNING]


def test_the_detail_is_the_class_name_unless_the_user_asks_for_the_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    gate().failed(ConnectionError("redis://:secret@host"))
    gate(detail=str).failed(StoreError("Watches are kept in Redis"))
    assert lines(caplog) == [
        (logging.WARNING, "paused (ConnectionError)"),
        (logging.WARNING, "paused (Watches are kept in Redis)"),
    ]


def test_redis_health_probes_once_per_interval_while_down() -> None:
    now = [100.0]
    health = RedisHealth(probe_interval=2.0, clock=lambda: now[0])
    assert health.should_try() and health.should_try(), "up: everyone tries"
    health.failed(ConnectionError())
    assert health.down and not health.should_try(), "just failed: nobody probes"
    now[0] += 2.0
    assert health.should_try(), "one caller probes after the interval"
    assert not health.should_try(), "and only one"
    health.succeeded()
    assert not health.down and health.should_try()


async def test_the_errors_of_a_stopped_redis_are_in_each_tuple(
    redis_server: EmbeddedRedis, redis_factory: RedisFactory
) -> None:
    client = redis_factory(redis_server.url, socket_connect_timeout=1)
    await asyncio.to_thread(redis_server.stop)
    with pytest.raises(REDIS_OUTAGE) as raw:
        await client.ping()
    assert isinstance(raw.value, PING_FAILED) and isinstance(raw.value, STORE_UNAVAILABLE)
    with pytest.raises(StoreError) as translated:  # the watch store has no fallback
        await WatchStore(client).channels()
    assert isinstance(translated.value, STORE_UNAVAILABLE)
    assert not isinstance(translated.value, REDIS_OUTAGE)
