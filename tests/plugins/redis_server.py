"""Redis fixtures: a real Redis server for the whole test session.

- ``redis_url`` (session): ``$TEST_REDIS_URL`` if set, else an embedded, non-persistent
  ``redis-server`` started for the session and shut down at the end. Under pytest-xdist the
  session is a worker's: each starts its own server. ``$TEST_REDIS_URL`` turns xdist off.
- ``redis`` (function, async): a ``redis.asyncio.Redis`` (bytes replies) on ``redis_url``,
  with the database flushed before and after the test.
- ``redis_factory`` (function, async): ``make(url=None) -> Redis`` for tests that need
  several independent connections (like replicas); all are closed at teardown.
- ``redis_server`` (function): a private embedded server for outage tests; ``stop()`` and
  ``start()`` keep ``.url``. It never touches the session server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.storage.embedded import EmbeddedRedis

RedisFactory = Callable[..., aioredis.Redis]


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """One process on ``$TEST_REDIS_URL``: pytest-xdist's workers would share that server, and
    tests read server-wide figures (``INFO commandstats``, ``CLIENT LIST``) of their own."""
    if os.environ.get("TEST_REDIS_URL", "").strip() and getattr(config.option, "numprocesses", 0):
        config.option.numprocesses = 0


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TEST_REDIS_URL", "").strip()
    if external:
        yield external
        return
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis"), persistent=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
async def redis_factory(redis_url: str) -> AsyncIterator[RedisFactory]:
    clients: list[aioredis.Redis] = []

    def make(url: str | None = None, **kwargs: Any) -> aioredis.Redis:
        client = aioredis.Redis.from_url(url or redis_url, **kwargs)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir=tmp_path / "outage-redis", persistent=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
