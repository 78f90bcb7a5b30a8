"""The call budget against a real Redis (and the in-process twin with the same rules).

Limits are compressed (a few calls per fraction of a second) so the sliding window turns
over many times within a test. Grant times are taken on the client right after ``acquire``
returns; ``TOL`` absorbs the scheduling noise between Redis granting and the task resuming.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from bot import keys
from bot.budget import (
    CallBudget,
    FailoverBudget,
    LocalCallBudget,
    Priority,
    RedisCallBudget,
)
from bot.config import RateLimit
from bot.embedded_redis import EmbeddedRedis
from bot.errors import BudgetTimeout
from tests.plugins.redis_server import RedisFactory

TOL = 0.05
FAST = RateLimit(5, 0.5)

BudgetMaker = Callable[..., CallBudget]


@pytest.fixture(params=["redis", "local"])
def new_budget(request: pytest.FixtureRequest) -> BudgetMaker:
    """``new_budget(scope=..., limit=...)``: for Redis, a new client each time (a replica);
    in process there is one budget per scope, as in a real process."""
    if request.param == "redis":
        request.getfixturevalue("redis")  # flushes the database around the test
        factory: RedisFactory = request.getfixturevalue("redis_factory")

        def make_redis(scope: str = "s", limit: RateLimit = FAST) -> CallBudget:
            return RedisCallBudget(factory(), scope=scope, limit=limit)

        return make_redis
    budgets: dict[str, LocalCallBudget] = {}

    def make_local(scope: str = "s", limit: RateLimit = FAST) -> CallBudget:
        return budgets.setdefault(scope, LocalCallBudget(limit=limit))

    return make_local


def assert_sliding_window(times: list[float], limit: RateLimit) -> None:
    times = sorted(times)
    for first, last in zip(times, times[limit.calls :], strict=False):
        assert last - first >= limit.window - TOL, (
            f"{limit.calls + 1} starts in {last - first:.3f}s"
        )


async def grant_times(budget: CallBudget, count: int, priority: Priority) -> list[float]:
    times = []
    for _ in range(count):
        await budget.acquire(priority)
        times.append(time.monotonic())
    return times


async def fill(budget: CallBudget, limit: RateLimit = FAST) -> None:
    for _ in range(limit.calls):
        await budget.acquire(timeout=0)


async def test_replicas_never_exceed_the_window_and_use_it_fully(new_budget: BudgetMaker) -> None:
    replicas = [new_budget() for _ in range(4)]
    started = time.monotonic()
    results = await asyncio.gather(
        *(grant_times(b, 3, Priority.INTERACTIVE) for b in replicas for _ in range(2))
    )
    times = [t for r in results for t in r]
    assert len(times) == 24
    assert_sliding_window(times, FAST)
    # 24 starts at 5 per window: batches at 0, 0.5, 1.0, 1.5, 2.0 s.
    assert max(times) - started == pytest.approx(2.0, abs=0.3)


async def test_background_also_respects_the_window(new_budget: BudgetMaker) -> None:
    replicas = [new_budget() for _ in range(3)]
    results = await asyncio.gather(*(grant_times(b, 4, Priority.BACKGROUND) for b in replicas))
    times = [t for r in results for t in r]
    # Background leaves one slot for people: at most 4 starts in any window.
    assert_sliding_window(times, RateLimit(4, FAST.window))


async def test_interactive_waiters_go_before_background(new_budget: BudgetMaker) -> None:
    limit = RateLimit(2, 0.4)
    background, interactive = new_budget(limit=limit), new_budget(limit=limit)
    await fill(interactive, limit)
    order: list[str] = []

    async def take(budget: CallBudget, priority: Priority) -> None:
        await budget.acquire(priority)
        order.append(priority.name)

    bg = [asyncio.create_task(take(background, Priority.BACKGROUND)) for _ in range(2)]
    await asyncio.sleep(0.05)  # the background tasks are already waiting
    fg = [asyncio.create_task(take(interactive, Priority.INTERACTIVE)) for _ in range(3)]
    await asyncio.gather(*bg, *fg)
    assert order == ["INTERACTIVE"] * 3 + ["BACKGROUND"] * 2


async def test_penalize_blocks_until_retry_after(new_budget: BudgetMaker) -> None:
    budget = new_budget(limit=RateLimit(5, 1.0))
    await budget.acquire()
    await budget.penalize(0.3)
    assert await budget.calls_left() == 0
    assert await budget.next_slot_in() == pytest.approx(0.3, abs=TOL)
    started = time.monotonic()
    await budget.acquire()
    assert time.monotonic() - started == pytest.approx(0.3, abs=TOL)


async def test_penalize_without_retry_after_blocks_a_window(new_budget: BudgetMaker) -> None:
    budget = new_budget()
    await budget.penalize(None)
    assert await budget.next_slot_in() == pytest.approx(FAST.window, abs=TOL)
    with pytest.raises(BudgetTimeout):
        await budget.acquire(timeout=0.2)


async def test_penalize_beyond_a_window(new_budget: BudgetMaker) -> None:
    budget = new_budget()
    await budget.penalize(1.2)  # Retry-After longer than the window is honoured
    assert await budget.next_slot_in() == pytest.approx(1.2, abs=TOL)
    await asyncio.sleep(0.6)
    assert await budget.calls_left() == 0


async def test_timeout_raises_with_the_wait(new_budget: BudgetMaker) -> None:
    budget = new_budget()
    assert await budget.calls_left() == 5
    await fill(budget)
    assert await budget.calls_left() == 0
    started = time.monotonic()
    with pytest.raises(BudgetTimeout) as caught:
        await budget.acquire(timeout=0.1)
    assert time.monotonic() - started < 0.05, "a wait beyond the deadline fails at once"
    assert FAST.window - 0.1 < caught.value.wait_seconds <= FAST.window
    await asyncio.sleep(FAST.window)
    assert await budget.calls_left() == 5


async def test_scopes_are_independent(new_budget: BudgetMaker) -> None:
    a, b = new_budget(scope="ak-a"), new_budget(scope="ak-b")
    await fill(a)
    assert await a.calls_left() == 0
    assert await b.calls_left() == 5
    assert await b.next_slot_in() == 0.0
    await b.acquire(timeout=0)


async def test_cancelled_waiter_stops_blocking_background(new_budget: BudgetMaker) -> None:
    budget = new_budget()
    await fill(budget)
    waiter = asyncio.create_task(budget.acquire())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    started = time.monotonic()
    # A leftover waiter entry would hold background off for its whole grace period.
    await budget.acquire(Priority.BACKGROUND, timeout=2.0)
    assert time.monotonic() - started < FAST.window + TOL


async def test_waiter_registration_in_redis(redis: aioredis.Redis) -> None:
    budget = RedisCallBudget(redis, scope="s", limit=FAST)
    await fill(budget)
    assert 0 < await redis.pttl(keys.budget_log("s")) <= FAST.window * 1000 + 1  # ms rounding
    waiter = asyncio.create_task(budget.acquire())
    await asyncio.sleep(0.05)
    assert await redis.zcard(keys.budget_waiters("s")) == 1
    assert await redis.pttl(keys.budget_waiters("s")) > 0, "entries of dead waiters expire"
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await redis.zcard(keys.budget_waiters("s")) == 0
    with pytest.raises(BudgetTimeout):
        await budget.acquire(timeout=0.01)
    assert await redis.zcard(keys.budget_waiters("s")) == 0, "a timed-out waiter leaves"


async def test_granted_waiter_leaves_and_log_expires(redis: aioredis.Redis) -> None:
    budget = RedisCallBudget(redis, scope="s", limit=RateLimit(1, 0.2))
    await budget.acquire()
    await budget.acquire()  # waits, is granted
    assert await redis.zcard(keys.budget_waiters("s")) == 0
    await asyncio.sleep(0.25)
    assert await redis.exists(keys.budget_log("s")) == 0


async def _wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_failover_keeps_limiting_and_recovers(
    redis_server: EmbeddedRedis,
    redis_factory: RedisFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.redis_health")
    client = redis_factory(redis_server.url)
    primary = RedisCallBudget(client, scope="s", limit=FAST)
    budget = FailoverBudget(primary, LocalCallBudget(limit=FAST), probe_interval=0.1)
    await budget.acquire(timeout=0)
    await budget.acquire(timeout=0)
    redis_server.stop()

    times = await asyncio.gather(*(grant_times(budget, 2, Priority.INTERACTIVE) for _ in range(4)))
    # The two starts Redis granted still count: only 3 more fit in the first window.
    assert sorted(t for r in times for t in r)[3] - min(min(r) for r in times) > 0.3
    assert_sliding_window([t for r in times for t in r], FAST)
    assert budget.degraded
    assert await budget.calls_left() <= 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]

    redis_server.start()  # same URL, empty data (non-persistent)

    async def recovered() -> bool:
        await budget.next_slot_in()
        return not budget.degraded

    await _wait_for(recovered)
    infos = [r for r in caplog.records if "again" in r.getMessage()]
    assert len(infos) == 1 and infos[0].levelno == logging.INFO
    # Redis was told about the starts made without it, so other replicas respect them.
    assert await client.zcard(keys.budget_log("s")) > 0
    assert await primary.calls_left() == await budget.calls_left()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_failover_remembers_a_429_through_an_outage(
    redis_server: EmbeddedRedis, redis_factory: RedisFactory
) -> None:
    primary = RedisCallBudget(redis_factory(redis_server.url), scope="s", limit=FAST)
    budget = FailoverBudget(primary, LocalCallBudget(limit=FAST), probe_interval=0.1)
    await budget.penalize(0.4)
    redis_server.stop()
    assert await budget.next_slot_in() == pytest.approx(0.4, abs=TOL)
    with pytest.raises(BudgetTimeout):
        await budget.acquire(timeout=0.1)


def test_budgets_satisfy_the_protocol() -> None:
    assert isinstance(LocalCallBudget(limit=FAST), CallBudget)


async def test_waiting_sleeps_instead_of_polling(redis: aioredis.Redis) -> None:
    budget = RedisCallBudget(redis, scope="s", limit=RateLimit(1, 1.0))
    await budget.acquire()

    async def script_calls() -> int:
        stats = await redis.info("commandstats")
        return sum(
            int(v["calls"]) for k, v in stats.items() if k in {"cmdstat_evalsha", "cmdstat_eval"}
        )

    before = await script_calls()
    started = time.monotonic()
    await budget.acquire()
    assert time.monotonic() - started == pytest.approx(1.0, abs=TOL)
    assert await script_calls() - before <= 3, "one attempt, one sleep, one grant (plus slack)"


async def test_local_budget_with_an_injected_clock() -> None:
    now = [100.0]
    budget = LocalCallBudget(limit=RateLimit(3, 10.0), clock=lambda: now[0])
    for step in range(3):
        await budget.acquire(timeout=0)
        now[0] += 1.0 + step
    assert await budget.calls_left() == 0
    assert await budget.next_slot_in() == pytest.approx(4.0)  # first start at 100 + 10 - 106
    now[0] = 110.0
    assert await budget.calls_left() == 1
    await budget.penalize(30.0)
    assert await budget.next_slot_in() == pytest.approx(30.0)
    assert await budget.calls_left() == 0
    now[0] = 140.0
    assert await budget.calls_left() == 3


async def test_background_yields_to_another_replicas_live_waiter(redis: aioredis.Redis) -> None:
    budget = RedisCallBudget(redis, scope="s", limit=FAST)
    seconds, micros = await redis.time()
    # A waiter of another replica, as its acquire registers it, alive for 0.3 s more.
    await redis.zadd(keys.budget_waiters("s"), {"other": seconds + micros / 1e6 + 0.3})
    assert await budget.calls_left() == 5
    with pytest.raises(BudgetTimeout):
        await budget.acquire(Priority.BACKGROUND, timeout=0)
    await budget.acquire(Priority.INTERACTIVE, timeout=0)  # people are not held back
    started = time.monotonic()
    await budget.acquire(Priority.BACKGROUND, timeout=2.0)
    # The entry's owner never came back: it expires and background proceeds.
    assert 0.2 < time.monotonic() - started < 0.3 + FAST.window / FAST.calls + TOL


async def test_background_keeps_one_slot_for_people(new_budget: BudgetMaker) -> None:
    budget = new_budget()
    for _ in range(4):
        await budget.acquire(Priority.BACKGROUND, timeout=0)
    with pytest.raises(BudgetTimeout):
        await budget.acquire(Priority.BACKGROUND, timeout=0)
    await budget.acquire(Priority.INTERACTIVE, timeout=0)
    assert await budget.calls_left() == 0


async def test_one_call_per_window_still_serves_background(new_budget: BudgetMaker) -> None:
    budget = new_budget(limit=RateLimit(1, 0.2))
    await budget.acquire(Priority.BACKGROUND, timeout=0)  # no slot is held back at 1/window
    with pytest.raises(BudgetTimeout):
        await budget.acquire(Priority.INTERACTIVE, timeout=0.1)
