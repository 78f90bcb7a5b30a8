"""Assembling the parts from settings: Redis (external or embedded), the budgets (one per HSS
API), the mirror store, the HSS client and the lookup service. ``run``, ``query`` and ``demo``
share this."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from bot.config import RateLimit, Settings
from bot.errors import ConfigError
from bot.hss.budget import FailoverBudget, LocalCallBudget, RedisCallBudget
from bot.hss.client import HssClient
from bot.hss.guards import AuthGate, MissingTasks
from bot.hss.signer import Credentials
from bot.lookup import LookupService
from bot.models import HssApi
from bot.runs_service import RunsService
from bot.storage.embedded import EmbeddedRedis, ensure_embedded_redis
from bot.storage.mirror_fallback import FailoverMirrorStore, MemoryMirrorStore
from bot.storage.mirror_store import RedisMirrorStore
from bot.storage.outage import RedisHealth
from bot.storage.redis_url import DirectUrl, parse_redis_url

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    redis: aioredis.Redis
    client: HssClient
    lookups: LookupService
    #: The sync runs (one list call's snapshot) and the task references.
    runs: RunsService
    #: ListAssociateRegistries' budget.
    budget: FailoverBudget
    #: ListImageScanTask's (the sync runs): HSS counts each API's calls apart.
    tasks_budget: FailoverBudget
    embedded: EmbeddedRedis | None = None

    @property
    def budgets(self) -> dict[HssApi, FailoverBudget]:
        return {HssApi.REGISTRIES: self.budget, HssApi.TASKS: self.tasks_budget}

    async def aclose(self) -> None:
        await self.lookups.aclose()
        await self.runs.aclose()
        await self.client.aclose()
        await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


class _SentinelMaster(aioredis.Redis):
    """The master's client from ``Sentinel.master_for``: closing it also closes the
    connections to the sentinels, which redis-py leaves open for the caller to close."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            pool = self.connection_pool
            if isinstance(pool, SentinelConnectionPool):
                await pool.sentinel_manager.aclose()


def redis_client(url: str) -> aioredis.Redis:
    """A client for ``REDIS_URL`` (see ``bot.storage.redis_url``); through Sentinel it asks for the
    master's address on every new connection, so it follows a failover by itself."""
    # Short timeouts: a dead Redis must turn into the in-process fallback quickly, not hang
    # a slash command past Slack's 3-second ack. Sentinels get them too: each new connection
    # to the master first asks them where it is.
    timeouts: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    target = parse_redis_url(url)
    if isinstance(target, DirectUrl):
        return aioredis.Redis.from_url(target.url, health_check_interval=15, **timeouts)
    tls: dict[str, Any] = {"ssl": True} if target.tls else {}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={
            "username": target.sentinel_username,
            "password": target.password,
            **timeouts,
            **tls,
        },
    )
    master: aioredis.Redis = sentinel.master_for(
        target.service_name,
        redis_class=_SentinelMaster,
        db=target.db,
        username=target.username,
        password=target.password,
        health_check_interval=15,
        **timeouts,
        **tls,
    )
    return master


async def open_runtime(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> Runtime:
    """Everything a process needs to answer lookups, from settings that
    ``Settings.for_command(..., hss=True)`` accepted."""
    embedded: EmbeddedRedis | None = None
    if settings.redis_url is not None:
        url = settings.redis_url
    else:
        try:
            url, embedded = await asyncio.to_thread(ensure_embedded_redis, settings.data_dir)
        except OSError as exc:
            # Without REDIS_URL the embedded Redis lives in the data dir: an unusable dir
            # (read-only, not a directory) is a configuration problem, not a crash.
            raise ConfigError(
                "HSS_DATA_DIR",
                f"cannot use {str(settings.data_dir)!r} for the embedded Redis: "
                f"{exc.strerror or exc}; set HSS_DATA_DIR to a writable directory or "
                "REDIS_URL to a Redis server",
            ) from None
    redis = redis_client(url)
    limit = settings.rate_limit.padded()
    health = RedisHealth()
    budget = _budget(redis, settings, HssApi.REGISTRIES, limit, health)
    tasks_budget = _budget(
        redis, settings, HssApi.TASKS, settings.tasks_rate_limit.padded(), health
    )
    # A lock-out and a proof are about one AK/SK pair: a corrected secret may call at once.
    auth = AuthGate(redis, scope=settings.auth_scope, health=health, clock=clock)
    assert settings.ak is not None and settings.sk is not None and settings.project_id
    credentials = Credentials(
        ak=settings.ak.reveal(),
        sk=settings.sk.reveal(),
        security_token=settings.security_token.reveal() if settings.security_token else None,
    )
    client = HssClient(
        endpoint=settings.hss_endpoint,
        project_id=settings.project_id,
        credentials=credentials,
        budget=budget,
        tasks_budget=tasks_budget,
        auth=auth,
        missing=MissingTasks(redis, health=health),
        transport=transport,
    )
    store = FailoverMirrorStore(RedisMirrorStore(redis), MemoryMirrorStore(clock), health=health)
    lookups = LookupService(
        store=store,
        client=client,
        budget=budget,
        auth=auth,
        limit=limit,
        project_id=settings.project_id,
        default_ep=settings.enterprise_project_id,
        fresh_seconds=settings.fresh_seconds,
        clock=clock,
    )
    runs = RunsService(
        redis=redis,
        client=client,
        project_id=settings.project_id,
        ep=settings.enterprise_project_id,
        clock=clock,
        health=health,
    )
    return Runtime(
        settings=settings,
        redis=redis,
        client=client,
        lookups=lookups,
        runs=runs,
        budget=budget,
        tasks_budget=tasks_budget,
        embedded=embedded,
    )


def _budget(
    redis: aioredis.Redis,
    settings: Settings,
    api: HssApi,
    limit: RateLimit,
    health: RedisHealth,
) -> FailoverBudget:
    """One API's budget, shared through Redis by everything with the same AK."""
    return FailoverBudget(
        RedisCallBudget(redis, scope=settings.budget_scope, limit=limit, api=api),
        LocalCallBudget(limit=limit),
        health=health,
    )
