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

from bot.config import RateLimit
from bot.errors import BudgetTimeout
from bot.hss.budget import (
    CallBudget,
    FailoverBudget,
    LocalCallBudget,
    Priority,
    RedisCallBudget,
    Ticket,
)
from bot.hss.budget_script import BUDGET_LUA
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
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
    caplog.set_level(logging.INFO, logger="bot.storage.outage")
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


# --- first come, first served ---

ONE = RateLimit(1, 0.2)  # one slot per 0.2 s: every waiter has its own turn


async def queue_up(
    budgets: list[CallBudget], names: list[str], order: list[str]
) -> list[asyncio.Task[float]]:
    """Interactive waiters ``names``, arriving one after another across ``budgets``
    (replicas); each appends its name to ``order`` and returns its grant time."""

    async def wait(budget: CallBudget, name: str) -> float:
        await budget.acquire()
        order.append(name)
        return time.monotonic()

    tasks = []
    for i, name in enumerate(names):
        tasks.append(asyncio.create_task(wait(budgets[i % len(budgets)], name)))
        await asyncio.sleep(0.02)  # registered (one script call) before the next one arrives
    return tasks


async def script_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(v["calls"]) for k, v in stats.items() if k in {"cmdstat_evalsha", "cmdstat_eval"}
    )


async def test_interactive_waiters_are_served_in_arrival_order(new_budget: BudgetMaker) -> None:
    replicas = [new_budget(limit=ONE) for _ in range(3)]
    await fill(replicas[0], ONE)
    started = time.monotonic()
    order: list[str] = []
    names = [f"w{i}" for i in range(6)]
    times = await asyncio.gather(*await queue_up(replicas, names, order))
    assert order == names
    assert_sliding_window(times, ONE)
    # Each is served at its turn: no slot goes unused while someone waits.
    for turn, at in enumerate(times, start=1):
        assert at - started == pytest.approx(turn * ONE.window, abs=TOL + 0.01 * turn)


async def test_waiters_wake_one_by_one(redis: aioredis.Redis, redis_factory: RedisFactory) -> None:
    replicas = [RedisCallBudget(redis_factory(), scope="s", limit=ONE) for _ in range(3)]
    await fill(replicas[0], ONE)
    before = await script_calls(redis)
    order: list[str] = []
    await asyncio.gather(*await queue_up(replicas, [f"w{i}" for i in range(6)], order))
    # Each waiter: one registration, one grant, at most one early wake-up. Waking all
    # waiters at every free slot would take 6 + (6 + 5 + 4 + 3 + 2 + 1) = 27 calls.
    assert await script_calls(redis) - before <= 3 * 6


async def test_the_wait_is_until_the_waiters_own_turn(redis: aioredis.Redis) -> None:
    limit = RateLimit(2, 1.0)
    script = redis.register_script(BUDGET_LUA)
    budget_keys = [keys.budget_log("s"), keys.budget_waiters("s"), keys.budget_queue("s")]

    async def acquire(waiter: str, arrival: float | str = "") -> tuple[bool, float, float]:
        args = ["acquire", limit.calls, limit.window, f"call-{waiter}", 0, waiter, 2.0, 1, arrival]
        granted, wait, _, queued_at = await script(keys=budget_keys, args=args)
        return bool(granted), float(wait), float(queued_at)

    # Two starts in the window; their slots free in 0.1 s and 0.5 s.
    await RedisCallBudget(redis, scope="s", limit=limit).note_starts([("x", 0.9), ("y", 0.5)])
    waits = [(await acquire(w))[1] for w in "abcd"]
    # The 3rd and 4th waiters need slots the 1st and 2nd will take: a window later.
    assert waits == pytest.approx([0.1, 0.5, 1.1, 1.5], abs=0.02)
    arrival_a = await redis.zscore(keys.budget_queue("s"), "a")
    _, wait, queued_at = await acquire("a")  # waking up again does not move it to the back
    assert wait == pytest.approx(0.1, abs=0.02)
    assert queued_at == pytest.approx(arrival_a, abs=1e-5)
    assert await redis.zscore(keys.budget_queue("s"), "a") == arrival_a
    # A caller that brings an earlier arrival (a ticket) goes before them all.
    _, wait, _ = await acquire("e", arrival=arrival_a - 1)
    assert wait == pytest.approx(0.1, abs=0.02)
    assert (await acquire("a"))[1] == pytest.approx(0.5, abs=0.02)
    assert await redis.zrange(keys.budget_queue("s"), 0, -1) == [b"e", b"a", b"b", b"c", b"d"]
    assert await redis.pttl(keys.budget_queue("s")) > 0, "entries of dead waiters expire"


async def test_two_free_slots_serve_the_first_two_waiters(redis: aioredis.Redis) -> None:
    budget = RedisCallBudget(redis, scope="s", limit=RateLimit(2, 0.3))
    await fill(budget, RateLimit(2, 0.3))
    order: list[str] = []
    tasks = await queue_up([budget], ["a", "b", "c"], order)
    times = await asyncio.gather(*tasks)
    assert sorted(order[:2]) == ["a", "b"] and order[2] == "c"  # a and b in either order
    assert abs(times[1] - times[0]) < TOL, "the second waiter does not wait for the first"
    assert times[2] - times[0] == pytest.approx(0.3, abs=TOL)


async def test_a_cancelled_waiter_frees_its_place(new_budget: BudgetMaker) -> None:
    budgets = [new_budget(limit=ONE) for _ in range(2)]
    await fill(budgets[0], ONE)
    started = time.monotonic()
    order: list[str] = []
    a, b, c = await queue_up(budgets, ["a", "b", "c"], order)
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    (d,) = await queue_up(budgets, ["d"], order)
    await asyncio.gather(a, c, d)
    assert order == ["a", "c", "d"]
    # c was told its turn was the 3rd slot; it may not be served later than that.
    assert c.result() - started < 3 * ONE.window + TOL


async def test_queue_entries_leave_with_their_waiter(redis: aioredis.Redis) -> None:
    budget = RedisCallBudget(redis, scope="s", limit=ONE)
    await fill(budget, ONE)
    order: list[str] = []
    a, b = await queue_up([budget], ["a", "b"], order)
    assert await redis.zcard(keys.budget_queue("s")) == 2
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    assert await redis.zcard(keys.budget_queue("s")) == 1
    assert await redis.zcard(keys.budget_waiters("s")) == 1
    await a
    assert await redis.exists(keys.budget_queue("s"), keys.budget_waiters("s")) == 0


async def test_a_dead_waiter_stops_blocking_after_its_grace(redis: aioredis.Redis) -> None:
    budget = RedisCallBudget(redis, scope="s", limit=ONE)
    await fill(budget, ONE)
    seconds, micros = await redis.time()
    now = seconds + micros / 1e6
    # Another replica's waiter, first in the queue, whose process died: it never wakes up.
    await redis.zadd(keys.budget_queue("s"), {"dead": now - 1.0})
    await redis.zadd(keys.budget_waiters("s"), {"dead": now + 0.3})
    started = time.monotonic()
    await budget.acquire(timeout=2.0)
    # It held the head of the queue until it expired, and not longer than a slot after.
    assert 0.3 - TOL < time.monotonic() - started < 0.3 + ONE.window + TOL
    assert await redis.zscore(keys.budget_queue("s"), "dead") is None


async def test_a_ticket_keeps_the_place_of_the_first_page(new_budget: BudgetMaker) -> None:
    budget = new_budget(limit=ONE)
    order: list[str] = []
    fetch = Ticket()
    await budget.acquire(ticket=fetch)  # page 1 of a fetch
    (question,) = await queue_up([budget], ["question"], order)
    await budget.acquire(ticket=fetch)  # page 2 arrived after the question, goes before it
    order.append("page 2")
    await question
    await budget.acquire()  # without a ticket: the back of the queue
    assert order == ["page 2", "question"]


async def test_mixed_load_keeps_the_window(new_budget: BudgetMaker) -> None:
    limit = RateLimit(3, 0.3)
    replicas = [new_budget(limit=limit) for _ in range(3)]
    times: list[float] = []

    async def take(budget: CallBudget, priority: Priority, count: int) -> None:
        for _ in range(count):
            await budget.acquire(priority)
            times.append(time.monotonic())

    await asyncio.gather(
        *(take(b, Priority.BACKGROUND, 3) for b in replicas),
        *(take(b, Priority.INTERACTIVE, 3) for b in replicas),
        *(take(b, Priority.INTERACTIVE, 1) for b in replicas),
    )
    assert len(times) == 21
    assert_sliding_window(times, limit)
