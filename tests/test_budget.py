"""The call budget against a real Redis (and the in-process twin with the same rules).

Limits are compressed (a few calls per fraction of a second) so the sliding window turns
over many times within a test. Each start is timed by the budget's own attempt that granted
it (``Timed``): the grant happened between that attempt's beginning and its end. Lower bounds
(the window is kept, a Retry-After is honoured) are checked with the latest moment a grant can
have happened against the earliest of the other, so they hold exactly, whatever the machine's
load; upper bounds (no slot idles while someone waits) the other way round, and only they allow
``TOL``: what a correct budget may add to a wait, its jitter and a wake-up on a busy machine.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.config import RateLimit
from bot.errors import BudgetTimeout, TooManyQuestions
from bot.hss.budget import (
    MAX_QUEUED_PER_ASKER,
    REDIS_CONNECTIONS,
    CallBudget,
    FailoverBudget,
    LocalCallBudget,
    Priority,
    RedisCallBudget,
    Ticket,
    asker,
)
from bot.hss.budget_script import BUDGET_LUA
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from tests.plugins.redis_server import RedisFactory
from tests.support import until

TOL = 0.05
#: Redis's clock, float seconds since 1970, rounds at about 2e-7 s.
EPS = 1e-6
FAST = RateLimit(5, 0.5)


@dataclass(frozen=True)
class Grant:
    """When a budget granted a start: between ``earliest`` and ``latest`` (time.monotonic)."""

    earliest: float
    latest: float


class Timed:
    """For the budgets under test: times each start by the attempt that granted it and counts
    the attempts made. It only watches; the budget's rules are untouched."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grants: dict[str, Grant] = {}
        self.attempts = 0

    async def _attempt(
        self, priority: Priority, call_id: str, waiter: str, ticket: Ticket
    ) -> float:
        began = time.monotonic()
        wait: float = await super()._attempt(priority, call_id, waiter, ticket)  # type: ignore[misc]
        self.attempts += 1
        if wait == 0:
            self.grants[call_id] = Grant(began, time.monotonic())
        return wait


class TimedRedisBudget(Timed, RedisCallBudget):
    pass


class TimedLocalBudget(Timed, LocalCallBudget):
    pass


TimedBudget = TimedRedisBudget | TimedLocalBudget
BudgetMaker = Callable[..., TimedBudget]


@pytest.fixture(params=["redis", "local"])
def new_budget(request: pytest.FixtureRequest) -> BudgetMaker:
    """``new_budget(scope=..., limit=...)``: for Redis, a new client each time (a replica);
    in process there is one budget per scope, as in a real process."""
    if request.param == "redis":
        request.getfixturevalue("redis")  # flushes the database around the test
        factory: RedisFactory = request.getfixturevalue("redis_factory")

        def make_redis(scope: str = "s", limit: RateLimit = FAST) -> TimedBudget:
            return TimedRedisBudget(factory(), scope=scope, limit=limit)

        return make_redis
    budgets: dict[str, TimedLocalBudget] = {}

    def make_local(scope: str = "s", limit: RateLimit = FAST) -> TimedBudget:
        return budgets.setdefault(scope, TimedLocalBudget(limit=limit))

    return make_local


def assert_sliding_window(grants: list[Grant], limit: RateLimit) -> None:
    """At most ``limit.calls`` starts in any ``limit.window``: any ``calls + 1`` of them span a
    window, even from the earliest the first can have been granted to the latest the last."""
    ordered = sorted(grants, key=lambda g: g.earliest)
    for i in range(len(ordered) - limit.calls):
        group = ordered[i : i + limit.calls + 1]
        span = max(g.latest for g in group) - group[0].earliest
        assert span >= limit.window - EPS, f"{limit.calls + 1} starts in {span:.3f}s"


async def grant(
    budget: TimedBudget,
    priority: Priority = Priority.INTERACTIVE,
    *,
    timeout: float | None = None,
    ticket: Ticket | None = None,
) -> Grant:
    """One start from ``budget``, and when it was granted."""
    call_id = await budget.acquire_call(priority, timeout=timeout, ticket=ticket)
    return budget.grants.pop(call_id)


async def grants(budget: TimedBudget, count: int, priority: Priority) -> list[Grant]:
    return [await grant(budget, priority) for _ in range(count)]


async def fill(budget: CallBudget, limit: RateLimit = FAST) -> None:
    for _ in range(limit.calls):
        await budget.acquire(timeout=0)


async def test_replicas_never_exceed_the_window_and_use_it_fully(new_budget: BudgetMaker) -> None:
    replicas = [new_budget() for _ in range(4)]
    started = time.monotonic()
    results = await asyncio.gather(
        *(grants(b, 3, Priority.INTERACTIVE) for b in replicas for _ in range(2))
    )
    got = [g for r in results for g in r]
    assert len(got) == 24
    assert_sliding_window(got, FAST)
    # 24 starts at 5 per window: batches at 0, 0.5, 1.0, 1.5, 2.0 s.
    assert max(g.latest for g in got) - started >= 2.0 - 0.3
    assert max(g.earliest for g in got) - started <= 2.0 + 0.3


async def test_background_also_respects_the_window(new_budget: BudgetMaker) -> None:
    replicas = [new_budget() for _ in range(3)]
    results = await asyncio.gather(*(grants(b, 4, Priority.BACKGROUND) for b in replicas))
    # Background leaves one slot for people: at most 4 starts in any window.
    assert_sliding_window([g for r in results for g in r], RateLimit(4, FAST.window))


async def test_interactive_waiters_go_before_background(new_budget: BudgetMaker) -> None:
    limit = RateLimit(2, 0.4)
    background, interactive = new_budget(limit=limit), new_budget(limit=limit)
    await fill(interactive, limit)
    order: list[str] = []

    async def take(budget: CallBudget, priority: Priority) -> None:
        await budget.acquire(priority)
        order.append(priority.name)

    tried = background.attempts
    bg = [asyncio.create_task(take(background, Priority.BACKGROUND)) for _ in range(2)]
    await until(lambda: background.attempts >= tried + 2, what="the background tasks waiting")
    fg = [asyncio.create_task(take(interactive, Priority.INTERACTIVE)) for _ in range(3)]
    await asyncio.gather(*bg, *fg)
    assert order == ["INTERACTIVE"] * 3 + ["BACKGROUND"] * 2


async def test_penalize_blocks_until_retry_after(new_budget: BudgetMaker) -> None:
    budget = new_budget(limit=RateLimit(5, 1.0))
    await budget.acquire()
    penalized = time.monotonic()
    await budget.penalize(0.3)
    assert await budget.calls_left() == 0
    left = await budget.next_slot_in()
    assert 0.3 - (time.monotonic() - penalized) - EPS <= left <= 0.3 + EPS
    started = time.monotonic()
    after = await grant(budget)
    assert after.latest - penalized >= 0.3 - EPS  # not before the Retry-After is over
    assert after.earliest - started <= 0.3 + TOL  # and as soon as it is


async def test_penalize_without_retry_after_blocks_a_window(new_budget: BudgetMaker) -> None:
    budget = new_budget()
    penalized = time.monotonic()
    await budget.penalize(None)
    left = await budget.next_slot_in()
    assert FAST.window - (time.monotonic() - penalized) - EPS <= left <= FAST.window + EPS
    with pytest.raises(BudgetTimeout):
        await budget.acquire(timeout=0.2)


async def test_penalize_beyond_a_window(new_budget: BudgetMaker) -> None:
    budget = new_budget()
    penalized = time.monotonic()
    await budget.penalize(1.2)  # Retry-After longer than the window is honoured
    left = await budget.next_slot_in()
    assert 1.2 - (time.monotonic() - penalized) - EPS <= left <= 1.2 + EPS
    await asyncio.sleep(0.6)  # more than a window goes by
    assert await budget.calls_left() == 0


async def test_timeout_raises_with_the_wait(new_budget: BudgetMaker) -> None:
    budget = new_budget()
    assert await budget.calls_left() == 5
    filled = time.monotonic()
    await fill(budget)
    assert await budget.calls_left() == 0
    tried, started = budget.attempts, time.monotonic()
    with pytest.raises(BudgetTimeout) as caught:
        await budget.acquire(timeout=0.1)
    failed = time.monotonic()
    # A wait beyond the deadline fails at once: one attempt, no sleep until the deadline.
    assert budget.attempts == tried + 1
    assert failed - started < 0.1
    wait = caught.value.wait_seconds
    assert FAST.window - (failed - filled) - EPS <= wait <= FAST.window + EPS
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
    ticket = Ticket()
    waiter = asyncio.create_task(budget.acquire(ticket=ticket))
    await until(lambda: bool(ticket.arrivals), what="the waiter queued")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    started = time.monotonic()
    # A leftover waiter entry would hold background off for its whole grace period.
    after = await grant(budget, Priority.BACKGROUND, timeout=2.0)
    assert after.earliest - started < FAST.window + TOL


async def test_waiter_registration_in_redis(redis: aioredis.Redis) -> None:
    budget = RedisCallBudget(redis, scope="s", limit=FAST)
    await fill(budget)
    assert 0 < await redis.pttl(keys.budget_log("s")) <= FAST.window * 1000 + 1  # ms rounding
    ticket = Ticket()
    waiter = asyncio.create_task(budget.acquire(ticket=ticket))
    await until(lambda: bool(ticket.arrivals), what="the waiter's first attempt")
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
    # The log lives no longer than its newest start matters (-2: already gone).
    ttl = await redis.pttl(keys.budget_log("s"))
    assert ttl == -2 or 0 < ttl <= 200 + 1  # ms rounding
    await until(lambda: gone(redis, keys.budget_log("s")), timeout=1.0, what="the log expired")


async def gone(redis: aioredis.Redis, key: str) -> bool:
    return await redis.exists(key) == 0


async def test_failover_keeps_limiting_and_recovers(
    redis_server: EmbeddedRedis,
    redis_factory: RedisFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.storage.outage")
    client = redis_factory(redis_server.url)
    primary = TimedRedisBudget(client, scope="s", limit=FAST)
    fallback = TimedLocalBudget(limit=FAST)
    budget = FailoverBudget(primary, fallback, probe_interval=0.1)
    await budget.acquire(timeout=0)
    await budget.acquire(timeout=0)
    first_by_redis = min(g.latest for g in primary.grants.values())
    redis_server.stop()

    async def take_two() -> None:
        for _ in range(2):
            await budget.acquire(Priority.INTERACTIVE)

    await asyncio.gather(*(take_two() for _ in range(4)))
    outage = sorted(fallback.grants.values(), key=lambda g: g.earliest)
    assert len(outage) == 8
    # The two starts Redis granted still count: only 3 more fit in their window (the fallback
    # noted them just after Redis granted them).
    assert outage[3].latest - first_by_redis >= FAST.window - EPS
    assert_sliding_window(outage, FAST)
    assert budget.degraded
    assert await budget.calls_left() <= 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]

    redis_server.start()  # same URL, empty data (non-persistent)

    async def recovered() -> bool:
        await budget.next_slot_in()
        return not budget.degraded

    await until(recovered, what="the budget back on Redis")
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
    penalized = time.monotonic()
    await budget.penalize(0.4)
    redis_server.stop()
    left = await budget.next_slot_in()
    assert 0.4 - (time.monotonic() - penalized) - EPS <= left <= 0.4 + EPS
    with pytest.raises(BudgetTimeout):
        await budget.acquire(timeout=0.1)


def test_budgets_satisfy_the_protocol() -> None:
    assert isinstance(LocalCallBudget(limit=FAST), CallBudget)


async def test_waiting_sleeps_instead_of_polling(redis: aioredis.Redis) -> None:
    budget = TimedRedisBudget(redis, scope="s", limit=RateLimit(1, 1.0))
    first = await grant(budget)

    async def script_calls() -> int:
        stats = await redis.info("commandstats")
        return sum(
            int(v["calls"]) for k, v in stats.items() if k in {"cmdstat_evalsha", "cmdstat_eval"}
        )

    before = await script_calls()
    second = await grant(budget)
    assert second.latest - first.earliest >= 1.0 - EPS
    assert second.earliest - first.latest <= 1.0 + TOL
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
    budget = TimedRedisBudget(redis, scope="s", limit=FAST)
    asked = time.monotonic()
    seconds, micros = await redis.time()
    # A waiter of another replica, as its acquire registers it, alive for 0.3 s more.
    await redis.zadd(keys.budget_waiters("s"), {"other": seconds + micros / 1e6 + 0.3})
    assert await budget.calls_left() == 5
    with pytest.raises(BudgetTimeout):
        await budget.acquire(Priority.BACKGROUND, timeout=0)
    await budget.acquire(Priority.INTERACTIVE, timeout=0)  # people are not held back
    started = time.monotonic()
    after = await grant(budget, Priority.BACKGROUND, timeout=2.0)
    # The entry's owner never came back: it expires and background proceeds.
    assert after.latest - asked >= 0.3 - EPS
    assert after.earliest - started < 0.3 + FAST.window / FAST.calls + TOL


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
    budgets: list[TimedBudget],
    names: list[str],
    order: list[str],
    sizes: dict[str, int] | None = None,
) -> list[asyncio.Task[Grant]]:
    """Interactive waiters ``names``, arriving one after another across ``budgets``
    (replicas); each appends its name to ``order`` and returns its grant. A name
    ``person/question`` is asked by ``person`` (the ``asker`` of its task); others by
    nobody in particular. ``sizes``: calls a question takes in all (default one)."""

    async def wait(budget: TimedBudget, name: str, ticket: Ticket) -> Grant:
        if "/" in name:
            asker.set(name.split("/")[0])
        got = await grant(budget, ticket=ticket)
        order.append(name)
        return got

    tasks = []
    for i, name in enumerate(names):
        # What a fresh acquire takes; it shows when the arrival is queued.
        ticket = Ticket(calls=(sizes or {}).get(name, 1))
        tasks.append(asyncio.create_task(wait(budgets[i % len(budgets)], name, ticket)))
        await until(lambda: bool(ticket.arrivals), what=f"{name} queued")  # before the next
    return tasks


async def script_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(v["calls"]) for k, v in stats.items() if k in {"cmdstat_evalsha", "cmdstat_eval"}
    )


async def test_interactive_waiters_are_served_in_arrival_order(new_budget: BudgetMaker) -> None:
    replicas = [new_budget(limit=ONE) for _ in range(3)]
    filled = await grant(replicas[0], timeout=0)
    order: list[str] = []
    names = [f"w{i}" for i in range(6)]
    got = await asyncio.gather(*await queue_up(replicas, names, order))
    assert order == names
    assert_sliding_window(got, ONE)
    # Each is served at its turn: no slot goes unused while someone waits.
    for turn, at in enumerate(got, start=1):
        assert at.latest - filled.earliest >= turn * ONE.window - EPS
        assert at.earliest - filled.latest <= turn * ONE.window + TOL + 0.01 * turn


async def test_waiters_wake_one_by_one(redis: aioredis.Redis, redis_factory: RedisFactory) -> None:
    replicas = [TimedRedisBudget(redis_factory(), scope="s", limit=ONE) for _ in range(3)]
    await fill(replicas[0], ONE)
    before = await script_calls(redis)
    order: list[str] = []
    await asyncio.gather(*await queue_up(replicas, [f"w{i}" for i in range(6)], order))
    # Each waiter: one registration, one grant, at most one early wake-up. Waking all
    # waiters at every free slot would take 6 + (6 + 5 + 4 + 3 + 2 + 1) = 27 calls.
    assert await script_calls(redis) - before <= 3 * 6


BUDGET_KEYS = [
    keys.budget_log("s"),
    keys.budget_waiters("s"),
    keys.budget_queue("s"),
    keys.budget_places("s"),
    keys.budget_askers("s"),
]


async def queue_order(redis: aioredis.Redis) -> list[str]:
    """The waiter ids of the Redis queue, in the order slots go to them."""
    return [m.decode().split(":")[1] for m in await redis.zrange(keys.budget_queue("s"), 0, -1)]


async def queued_arrival(redis: aioredis.Redis, waiter: str) -> float:
    """The arrival (Redis clock) the waiter was queued with, as its place records it."""
    place = await redis.hget(keys.budget_places("s"), waiter)
    assert place is not None, f"{waiter} is not queued"
    return float(place.decode().split(":")[0])


async def redis_now(redis: aioredis.Redis) -> float:
    seconds, micros = await redis.time()
    return seconds + micros / 1e6


async def test_the_wait_is_until_the_waiters_own_turn(redis: aioredis.Redis) -> None:
    # A long window: no slot frees while the test runs, however loaded the machine. Each
    # wait is checked as the Redis-clock moment it ends, between the script's earliest and
    # latest possible "now", against the slot times Redis holds: exact, not a tolerance.
    limit = RateLimit(2, 30.0)
    script = redis.register_script(BUDGET_LUA)

    async def acquire(waiter: str, arrival: float | str = "") -> tuple[float, float, float]:
        """The earliest and latest moment the wait ends, and the arrival queued with."""
        args = ["acquire", limit.calls, limit.window, f"call-{waiter}", 0, waiter, 2.0, 1, arrival]
        before = await redis_now(redis)
        granted, wait, _, queued_at, _ = await script(keys=BUDGET_KEYS, args=args)
        after = await redis_now(redis)
        assert not granted
        return before + float(wait), after + float(wait), float(queued_at)

    def ends_at(window: tuple[float, float, float], moment: float) -> bool:
        return window[0] - EPS <= moment <= window[1] + EPS

    # Two starts in the window; their slots free in 5 s and 15 s.
    await RedisCallBudget(redis, scope="s", limit=limit).note_starts([("x", 25.0), ("y", 15.0)])
    sx, sy = [await redis.zscore(keys.budget_log("s"), c) for c in "xy"]
    assert sx is not None and sy is not None
    free = [sx + limit.window, sy + limit.window]
    waits = [await acquire(w) for w in "abcd"]
    # The 3rd and 4th waiters need slots the 1st and 2nd will take: a window later.
    expected = [free[0], free[1], free[0] + limit.window, free[1] + limit.window]
    assert all(ends_at(w, at) for w, at in zip(waits, expected, strict=True)), (waits, expected)
    arrival_a = await queued_arrival(redis, "a")
    again = await acquire("a")  # waking up again does not move it to the back
    assert ends_at(again, free[0])
    assert again[2] == pytest.approx(arrival_a, abs=1e-5)
    assert await queued_arrival(redis, "a") == arrival_a
    # A caller that brings an earlier arrival (a ticket) goes before them all.
    assert ends_at(await acquire("e", arrival=arrival_a - 1), free[0])
    assert ends_at(await acquire("a"), free[1])
    assert await queue_order(redis) == ["e", "a", "b", "c", "d"]
    for key in BUDGET_KEYS[1:4]:
        assert await redis.pttl(key) > 0, "entries of dead waiters expire"


async def test_two_free_slots_serve_the_first_two_waiters(redis: aioredis.Redis) -> None:
    budget = TimedRedisBudget(redis, scope="s", limit=RateLimit(2, 0.3))
    await fill(budget, RateLimit(2, 0.3))
    order: list[str] = []
    tasks = await queue_up([budget], ["a", "b", "c"], order)
    a, b, c = await asyncio.gather(*tasks)
    assert sorted(order[:2]) == ["a", "b"] and order[2] == "c"  # a and b in either order
    gap = max(a.earliest, b.earliest) - min(a.latest, b.latest)
    assert gap < TOL, "the second waiter does not wait for the first"
    # c takes the slot the first of them frees, a window after it.
    assert c.latest - min(a.earliest, b.earliest) >= 0.3 - EPS
    assert c.earliest - max(a.latest, b.latest) <= 0.3 + TOL


async def test_a_cancelled_waiter_frees_its_place(new_budget: BudgetMaker) -> None:
    budgets = [new_budget(limit=ONE) for _ in range(2)]
    filled = await grant(budgets[0], timeout=0)
    order: list[str] = []
    a, b, c = await queue_up(budgets, ["a", "b", "c"], order)
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    (d,) = await queue_up(budgets, ["d"], order)
    await asyncio.gather(a, c, d)
    assert order == ["a", "c", "d"]
    # c was told its turn was the 3rd slot; it may not be served later than that.
    assert c.result().earliest - filled.latest < 3 * ONE.window + TOL


async def test_queue_entries_leave_with_their_waiter(redis: aioredis.Redis) -> None:
    budget = TimedRedisBudget(redis, scope="s", limit=ONE)
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
    budget = TimedRedisBudget(redis, scope="s", limit=ONE)
    await fill(budget, ONE)
    asked = time.monotonic()
    seconds, micros = await redis.time()
    now = seconds + micros / 1e6
    # Another replica's waiter, first in the queue, whose process died: it never wakes up.
    place = f"{now - 1.0:017.6f}:dead:U1"
    await redis.zadd(keys.budget_queue("s"), {place: 0})
    await redis.hset(keys.budget_places("s"), "dead", place)
    await redis.hset(keys.budget_askers("s"), mapping={"n:U1": 1, "r:U1": 0})
    await redis.zadd(keys.budget_waiters("s"), {"dead": now + 0.3})
    started = time.monotonic()
    got = await grant(budget, timeout=2.0)
    # It held the head of the queue until it expired, and not longer than a slot after.
    assert got.latest - asked >= 0.3 - EPS
    assert got.earliest - started < 0.3 + ONE.window + TOL
    assert await redis.zscore(keys.budget_queue("s"), place) is None
    assert await redis.hget(keys.budget_places("s"), "dead") is None
    assert await redis.hgetall(keys.budget_askers("s")) == {}, "its asker holds nothing"


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


# --- people take turns ---


async def test_people_take_turns_across_replicas(new_budget: BudgetMaker) -> None:
    replicas = [new_budget(limit=ONE) for _ in range(2)]
    filled = await grant(replicas[0], timeout=0)
    order: list[str] = []
    # One person asks three questions, then two others ask one each, then the first again
    # (after one of theirs was served, it holds the cap again) and a third person.
    names = ["ann/1", "ann/2", "ann/3", "bob/1", "cy/1"]
    got = await asyncio.gather(*await queue_up(replicas, names, order))
    # Round robin, each round in arrival order: ann's first, bob's and cy's, then ann's others.
    assert order == ["ann/1", "bob/1", "cy/1", "ann/2", "ann/3"]
    assert_sliding_window(got, ONE)
    # No slot idles while someone waits.
    last = max(g.earliest for g in got)
    assert last - filled.latest <= len(names) * ONE.window + TOL + 0.01 * len(names)


async def test_a_new_question_joins_the_round_being_served(new_budget: BudgetMaker) -> None:
    budget = new_budget(limit=ONE)
    await grant(budget, timeout=0)
    order: list[str] = []
    first = await queue_up([budget], ["ann/1", "ann/2", "ann/3", "bob/1"], order)
    await until(lambda: len(order) == 2, what="two served")  # ann/1, bob/1; ann/2 is next
    # ann's places are rounds 1 and 2 now: a newcomer goes before ann/3, after ann/2.
    later = await queue_up([budget], ["cy/1"], order)
    await asyncio.gather(*first, *later)
    assert order == ["ann/1", "bob/1", "ann/2", "cy/1", "ann/3"]


async def test_over_the_cap_a_question_is_refused_at_once(new_budget: BudgetMaker) -> None:
    # ann must still hold three places when she asks again: nobody may be served while the
    # four queue up, which took longer than 0.2 s on a loaded machine. A slot a second.
    slow = RateLimit(1, 1.0)
    replicas = [new_budget(limit=slow) for _ in range(2)]
    await grant(replicas[0], timeout=0)
    order: list[str] = []
    held = await queue_up(replicas, ["ann/1", "ann/2", "ann/3", "bob/1"], order)
    asker.set("ann")
    started = time.monotonic()
    with pytest.raises(TooManyQuestions) as refused:
        await replicas[1].acquire(timeout=5.0)
    assert time.monotonic() - started < slow.window, "refused, not queued"
    assert (refused.value.asker, refused.value.limit) == ("ann", MAX_QUEUED_PER_ASKER)
    assert "3 questions waiting" in refused.value.user_message()
    # Someone else is not held to ann's cap, and the refused question left no place behind.
    asker.set("cy")
    with pytest.raises(BudgetTimeout):
        await replicas[1].acquire(timeout=0)
    await until(lambda: order[:1] == ["ann/1"], what="ann's first served")
    asker.set("ann")
    again = asyncio.create_task(grant(replicas[1]))  # below the cap again
    await asyncio.gather(*held, again)
    assert order == ["ann/1", "bob/1", "ann/2", "ann/3"]


async def test_the_cap_counts_questions_not_their_pages(new_budget: BudgetMaker) -> None:
    budget = new_budget(limit=ONE)
    asker.set("ann")
    fetch = Ticket()
    await budget.acquire(ticket=fetch)  # page 1 of ann's fetch, granted at once
    order: list[str] = []
    held = await queue_up([budget], ["ann/1", "ann/2", "ann/3"], order)
    # Page 2 of the fetch is not a new question: it queues although ann holds the cap.
    tried = budget.attempts
    page_2 = asyncio.create_task(grant(budget, ticket=fetch))
    await until(lambda: budget.attempts > tried, what="page 2 queued")
    assert not page_2.done()
    with pytest.raises(TooManyQuestions):  # a new question is refused
        await budget.acquire()
    await asyncio.gather(*held, page_2)


async def test_the_wait_told_is_until_the_askers_turn(new_budget: BudgetMaker) -> None:
    budget = new_budget(limit=ONE)
    await grant(budget, timeout=0)
    order: list[str] = []
    held = await queue_up([budget], ["ann/1", "ann/2", "ann/3"], order)
    asker.set("bob")
    bob = await budget.next_slot_in()
    asker.set("ann")
    ann = await budget.next_slot_in()
    asker.set(None)
    anyone = await budget.next_slot_in()
    # bob would go after ann/1 (the round being served), ann after her own three, and a
    # question of nobody in particular like bob.
    assert ann - bob == pytest.approx(2 * ONE.window, abs=0.03)
    assert anyone == pytest.approx(bob, abs=0.03)
    assert ONE.window - 0.05 <= bob <= 2 * ONE.window + EPS
    await asyncio.gather(*held)


async def test_a_fetch_of_many_pages_takes_turns(new_budget: BudgetMaker) -> None:
    budget = new_budget(limit=ONE)
    order: list[str] = []
    asker.set("ann")
    fetch = Ticket()
    await budget.acquire(ticket=fetch)  # page 1 of ann's fetch
    (bob,) = await queue_up([budget], ["bob/1"], order)
    # Page 2 keeps the first page's arrival but takes the round after it: bob goes first.
    await budget.acquire(ticket=fetch)
    order.append("ann page 2")
    await bob
    assert order == ["bob/1", "ann page 2"]


async def test_mixed_load_keeps_the_window(new_budget: BudgetMaker) -> None:
    limit = RateLimit(3, 0.3)
    replicas = [new_budget(limit=limit) for _ in range(3)]
    times: list[Grant] = []

    async def take(budget: TimedBudget, priority: Priority, count: int) -> None:
        for _ in range(count):
            times.append(await grant(budget, priority))

    await asyncio.gather(
        *(take(b, Priority.BACKGROUND, 3) for b in replicas),
        *(take(b, Priority.INTERACTIVE, 3) for b in replicas),
        *(take(b, Priority.INTERACTIVE, 1) for b in replicas),
    )
    assert len(times) == 21
    assert_sliding_window(times, limit)


# --- shortest question first ---


async def queue_page(
    budget: TimedBudget, fetch: Ticket, name: str, order: list[str]
) -> asyncio.Task[Grant]:
    """The next page of the fetch ``fetch``, queued (it has already had a page granted)."""

    async def wait() -> Grant:
        got = await grant(budget, ticket=fetch)
        order.append(name)
        return got

    tried = budget.attempts
    task = asyncio.create_task(wait())
    await until(lambda: budget.attempts > tried, what=f"{name} queued")
    return task


async def backdate(budget: TimedBudget, ages: list[float]) -> None:
    """Starts made ``ages`` seconds ago, as if by another replica."""
    if isinstance(budget, RedisCallBudget):
        await budget.note_starts([(f"old-{i}", age) for i, age in enumerate(ages)])
    else:
        for i, age in enumerate(ages):
            budget.record(f"old-{i}", time.monotonic() - age)


async def test_a_one_call_question_overtakes_queued_pages(new_budget: BudgetMaker) -> None:
    limit = RateLimit(3, 2.0)
    replicas = [new_budget(limit=limit) for _ in range(2)]
    # Two slots free in 0.1 s and 0.2 s; page 1 takes the third, which frees in a window.
    await backdate(replicas[0], [1.9, 1.8])
    order: list[str] = []
    fetch = Ticket(calls=4)  # a fetch of four pages, by nobody in particular
    await grant(replicas[0], ticket=fetch, timeout=0)  # page 1
    page_2 = await queue_page(replicas[0], fetch, "page 2", order)
    # Asked after page 2 queued, on the other replica: the one-call questions take the two
    # slots that free first, although page 2 came first; the page is served after them.
    later = await queue_up([replicas[1]], ["one", "two"], order)
    await asyncio.gather(page_2, *later)
    assert order == ["one", "two", "page 2"]


async def test_sizes_do_not_break_round_robin_or_the_cap(new_budget: BudgetMaker) -> None:
    replicas = [new_budget(limit=ONE) for _ in range(2)]
    await grant(replicas[0], timeout=0)
    order: list[str] = []
    # bob's question is long, ann's are one call each: bob still goes in the first round,
    # after ann's first (shorter) question and before her second.
    names = ["ann/1", "ann/2", "bob/long", "ann/3"]
    held = await queue_up(replicas, names, order, {"bob/long": 5})
    asker.set("ann")
    with pytest.raises(TooManyQuestions):  # ann holds the cap, whatever the sizes
        await replicas[1].acquire(ticket=Ticket(calls=1))
    await asyncio.gather(*held)
    assert order == ["ann/1", "bob/long", "ann/2", "ann/3"]


async def test_aging_gives_a_long_fetch_a_page_each_window(new_budget: BudgetMaker) -> None:
    limit = RateLimit(2, 0.5)
    replicas = [new_budget(limit=limit) for _ in range(2)]
    fetch = Ticket(calls=20)
    served: list[str] = []
    stop = asyncio.Event()

    async def flood(n: int) -> None:
        # One-call questions, always one waiting per flooder: without aging they alone
        # would be served, as each is shorter than the fetch.
        while not stop.is_set():
            await grant(replicas[1], ticket=Ticket())
            served.append(f"q{n}")

    flooders = [asyncio.create_task(flood(n)) for n in range(3)]
    await until(lambda: len(served) >= 2, what="the flood served")
    pages = [await grant(replicas[0], ticket=fetch)]  # page 1, a question of 20 calls
    served_before = len(served)
    for _ in range(3):
        pages.append(await grant(replicas[0], ticket=fetch))
    stop.set()
    await asyncio.gather(*flooders)
    # Each page waits at most a window to age, then for the next free slot.
    for before, after in itertools.pairwise(pages):
        assert after.earliest - before.latest <= 2 * limit.window + 2 * TOL
    # One-call questions still went between the pages (shortest first, up to aging).
    assert len(served) - served_before >= 3


# --- what waiting costs Redis ---


async def test_two_hundred_waiters_share_a_few_connections(
    redis: aioredis.Redis, redis_factory: RedisFactory
) -> None:
    client = redis_factory(client_name="budget-under-test")
    budget = TimedRedisBudget(client, scope="s", limit=RateLimit(1, 60.0))
    await fill(budget, RateLimit(1, 60.0))
    tickets = [Ticket() for _ in range(200)]
    waiters = [asyncio.create_task(budget.acquire(ticket=t)) for t in tickets]
    await until(lambda: all(t.arrivals for t in tickets), what="200 waiters queued")
    assert await redis.zcard(keys.budget_waiters("s")) == 200
    for waiter in waiters:  # shutdown: every waiter leaves at once
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert all(w.cancelled() for w in waiters)
    assert await redis.zcard(keys.budget_waiters("s")) == 0, "every waiter left"
    assert await redis.exists(keys.budget_queue("s"), keys.budget_places("s")) == 0
    clients = await redis.client_list()
    held = [c for c in clients if c.get("name") == "budget-under-test"]
    assert 0 < len(held) <= REDIS_CONNECTIONS
