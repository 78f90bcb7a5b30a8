"""What stops a call before it is sent (``bot.hss.guards``), on real parts: several runtimes
("replicas") on one real Redis, calling the HSS simulator over HTTP, which counts the 401s it
answered and the most requests it was answering at once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
import redis.asyncio as aioredis

from bot.config import Settings
from bot.errors import HssAuthError, HssNotFoundError, HssUnavailableError
from bot.hss.client import HssClient
from bot.hss.guards import MissingTasks
from bot.models import ApiFilter, LookupRequest, TaskRef
from bot.runtime import Runtime, open_runtime
from bot.sandbox.simulator import Faults
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.storage.outage import RedisHealth
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, MakeSim, RunningSim
from tests.plugins.redis_server import RedisFactory
from tests.support import until

MakeRuntime = Callable[..., Awaitable[Runtime]]
WRONG_SK = "SK-wrong-secret-0000000000000000000000000"


@pytest.fixture
async def make_runtime(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[MakeRuntime]:
    """``await make_runtime(sim, **env)``: a runtime (one replica, or one CLI run) on the
    test Redis; ``close(runtime)`` ends one early, as a process exits."""
    async with AsyncExitStack() as exits:

        async def make(sim: RunningSim, **env: str) -> Runtime:
            settings = Settings.from_env(
                {
                    "CLOUD_SDK_AK": TEST_AK,
                    "CLOUD_SDK_SK": TEST_SK,
                    "HSS_PROJECT_ID": TEST_PROJECT_ID,
                    "HSS_ENDPOINT": sim.url,
                    "REDIS_URL": redis_url,
                    "HSS_RATE_LIMIT": "1000/60s",
                    **env,
                }
            )
            runtime = await open_runtime(settings)
            exits.push_async_callback(runtime.aclose)
            return runtime

        yield make


def auth_failures(sim: RunningSim) -> int:
    return sum(sim.sim.auth_failures.values())


def calls(sim: RunningSim) -> int:
    return sum(sim.sim.by_status.values())


async def refused(runtime: Runtime, task: str) -> HssAuthError:
    with pytest.raises(HssAuthError) as caught:
        await runtime.lookups.refresh(LookupRequest(task))
    return caught.value


# --- authentication: one 401, not a burst ---


async def test_a_burst_with_a_wrong_secret_costs_one_401(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    # Latency keeps the first call in flight while the others arrive.
    sim = await make_hss_sim(faults=Faults(latency_ms=200.0))
    replicas = [await make_runtime(sim, CLOUD_SDK_SK=WRONG_SK) for _ in range(3)]
    errors = await asyncio.gather(
        *(refused(replicas[i % 3], f"task-{i}") for i in range(10)), return_exceptions=True
    )
    assert all(isinstance(e, HssAuthError) for e in errors), errors
    assert auth_failures(sim) == 1
    assert sim.sim.max_in_flight == 1, "one call at a time until the key is proven"
    assert {e.error_code for e in errors if isinstance(e, HssAuthError)} == {"APIGW.0301"}
    assert all(WRONG_SK not in str(e) for e in errors)


async def test_a_revoked_key_locks_after_one_401_although_calls_were_queued(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim()
    # One call per 0.4 s: after the first, every lookup waits for its slot in the queue.
    a, b = [await make_runtime(sim, HSS_RATE_LIMIT="1/400ms") for _ in range(2)]
    assert (await a.lookups.refresh(LookupRequest("t0"))).has_data  # the key is proven
    sim.sim.config = dataclasses.replace(sim.sim.config, sk=WRONG_SK)  # revoked at IAM
    waiters = keys.budget_waiters(a.settings.budget_scope)
    lookups = []
    for i, runtime in enumerate([a, b, a, b]):
        lookups.append(asyncio.create_task(refused(runtime, f"t{i + 1}")))
        # Each has passed the lock-out check before queuing, before the first 401.
        await until(lambda n=i + 1: queued(redis, waiters, n), what=f"lookup {i + 1} queued")
    errors = await asyncio.gather(*lookups)
    assert auth_failures(sim) == 1, "a caller granted its slot after the 401 did not call"
    assert len(errors) == 4
    assert await a.lookups.auth_lock() is not None
    assert await redis.exists(keys.auth_proven(a.settings.auth_scope)) == 0


async def queued(redis: aioredis.Redis, key: str, count: int) -> bool:
    return await redis.zcard(key) >= count


async def test_a_proven_key_stays_proven_after_a_restart(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim(faults=Faults(latency_ms=300.0))
    first = await make_runtime(sim)
    await first.lookups.refresh(LookupRequest("t0"))
    proof = keys.auth_proven(first.settings.auth_scope)
    assert 0 < await redis.pttl(proof) <= 24 * 3600 * 1000
    await first.aclose()  # the process ends; the next one starts
    later = await make_runtime(sim)
    await asyncio.gather(*(later.lookups.refresh(LookupRequest(f"t{i}")) for i in range(1, 5)))
    assert sim.sim.max_in_flight > 1, "no probation: the key was proven before the restart"
    assert auth_failures(sim) == 0


async def test_only_an_answer_from_past_the_gateway_proves_the_key(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim()
    rt = await make_runtime(sim)
    proof = keys.auth_proven(rt.settings.auth_scope)
    sim.sim.queue(503, 502, 504)  # a gateway or backend failure says nothing of the key
    with pytest.raises(HssUnavailableError):
        await rt.lookups.refresh(LookupRequest("t0"))
    assert await redis.exists(proof) == 0
    with pytest.raises(HssNotFoundError):  # HSS.0011: the service behind the gateway answered
        await rt.lookups.refresh(LookupRequest("missing-t"))
    assert await redis.exists(proof) == 1
    await redis.delete(proof)
    assert (await rt.lookups.refresh(LookupRequest("t1"))).has_data
    assert await redis.exists(proof) == 1


async def test_reset_auth_puts_the_key_on_probation(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim(faults=Faults(latency_ms=200.0))
    rt = await make_runtime(sim, CLOUD_SDK_SK=WRONG_SK)
    await refused(rt, "t0")
    assert await rt.lookups.reset_auth() is True
    assert await rt.lookups.auth_lock() is None
    await asyncio.gather(*(refused(rt, f"t{i}") for i in range(1, 6)))
    assert auth_failures(sim) == 2, "after a reset, one call tries the key again"
    assert sim.sim.max_in_flight == 1


# --- tasks HSS says do not exist ---


async def test_an_unknown_task_costs_one_call_across_replicas(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim()
    a, b = await make_runtime(sim), await make_runtime(sim)
    errors: list[HssNotFoundError] = []
    for runtime in (a, b, a, b):
        with pytest.raises(HssNotFoundError) as caught:
            await runtime.lookups.refresh(LookupRequest("missing-task"))
        errors.append(caught.value)
    assert calls(sim) == 1
    assert {(e.error_code, e.request_id) for e in errors} == {("HSS.0011", errors[0].request_id)}
    assert all("does not know this task" in e.user_message() for e in errors)
    key = keys.missing_task(a.lookups.ref(LookupRequest("missing-task")))
    assert 0 < await redis.pttl(key) <= 60_000
    # Another enterprise project is another question.
    with pytest.raises(HssNotFoundError):
        await a.lookups.refresh(LookupRequest("missing-task", ep="other"))
    assert calls(sim) == 2


async def test_a_missing_task_is_asked_again_after_the_ttl(
    make_hss_sim: MakeSim, redis: aioredis.Redis, redis_factory: RedisFactory
) -> None:
    sim = await make_hss_sim()
    missing = MissingTasks(redis_factory(), health=RedisHealth(), ttl=0.3)
    task = TaskRef(project_id=TEST_PROJECT_ID, task_id="missing-soon")
    async with HssClient(
        endpoint=sim.url, project_id=TEST_PROJECT_ID, credentials=sim.credentials, missing=missing
    ) as client:
        for _ in range(3):
            with pytest.raises(HssNotFoundError):
                await client.list_page(task, ApiFilter())
        assert calls(sim) == 1
        await until(lambda: gone(redis, keys.missing_task(task)), what="the entry expired")
        with pytest.raises(HssNotFoundError):
            await client.list_page(task, ApiFilter())
        assert calls(sim) == 2


async def gone(redis: aioredis.Redis, key: str) -> bool:
    return await redis.exists(key) == 0


async def test_missing_tasks_are_remembered_while_redis_is_away(
    make_hss_sim: MakeSim, redis_server: EmbeddedRedis, redis_factory: RedisFactory
) -> None:
    sim = await make_hss_sim()
    health = RedisHealth(probe_interval=0.05)
    missing = MissingTasks(redis_factory(redis_server.url), health=health)
    task = TaskRef(project_id=TEST_PROJECT_ID, task_id="missing-x")
    async with HssClient(
        endpoint=sim.url, project_id=TEST_PROJECT_ID, credentials=sim.credentials, missing=missing
    ) as client:
        with pytest.raises(HssNotFoundError):
            await client.list_page(task, ApiFilter())
        redis_server.stop()
        with pytest.raises(HssNotFoundError):
            await client.list_page(task, ApiFilter())
        assert health.down
    assert calls(sim) == 1
