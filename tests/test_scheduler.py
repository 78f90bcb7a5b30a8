"""The scheduler on real parts: the simulator over HTTP with compressed time (5 calls per
0.5 s), a real Redis, and several runtimes on that Redis standing in for replicas."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.lock import Lock

from bot.alerting.scheduler import Scheduler
from bot.config import Settings
from bot.lookup import LookupService
from bot.models import Answer, LookupRequest, TaskRef
from bot.runtime import Runtime, open_runtime
from bot.sandbox.simulator import Faults
from bot.storage import keys
from bot.storage.watch_store import WatchStore
from tests.plugins.hss_sim import (
    TEST_AK,
    TEST_PROJECT_ID,
    TEST_SK,
    MakeSim,
    RunningSim,
    SimClock,
)
from tests.support import until

POLL = 0.2
FAST = {"HSS_RATE_LIMIT": "5/500ms"}


@dataclass
class Log:
    """Every refresh a scheduler started: (task id, start, end), and any two at once."""

    refreshes: list[tuple[str, float, float]] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    overlaps: list[str] = field(default_factory=list)

    def starts(self, task_id: str) -> list[float]:
        return [start for t, start, _ in self.refreshes if t == task_id]

    def order(self) -> list[str]:
        return [t for t, _, _ in self.refreshes]


class Recording:
    """The scheduler's seam to the lookup service, recording each refresh it asks for."""

    def __init__(self, lookups: LookupService, log: Log) -> None:
        self._lookups = lookups
        self._log = log

    def ref(self, request: LookupRequest) -> TaskRef:
        return self._lookups.ref(request)

    async def refresh(self, request: LookupRequest, **kwargs: Any) -> Answer:
        task, start = request.task_id, time.time()
        if task in self._log.running:
            self._log.overlaps.append(task)
        self._log.running.add(task)
        try:
            return await self._lookups.refresh(request, **kwargs)
        finally:
            self._log.running.discard(task)
            self._log.refreshes.append((task, start, time.time()))


@dataclass
class Replica:
    runtime: Runtime
    scheduler: Scheduler
    log: Log

    @property
    def lookups(self) -> LookupService:
        return self.runtime.lookups


MakeReplica = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def make_replica(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[MakeReplica]:
    """``await make_replica(sim, poll=, log=, clock=, **env)``: a runtime and its scheduler,
    both on ``clock`` (default ``time.time``)."""
    async with AsyncExitStack() as exits:

        async def make(
            sim: RunningSim,
            *,
            poll: float = POLL,
            log: Log | None = None,
            clock: Callable[[], float] = time.time,
            **env: str,
        ) -> Replica:
            settings = Settings.from_env(
                {
                    "CLOUD_SDK_AK": TEST_AK,
                    "CLOUD_SDK_SK": TEST_SK,
                    "HSS_PROJECT_ID": TEST_PROJECT_ID,
                    "HSS_ENDPOINT": sim.url,
                    "REDIS_URL": redis_url,
                    **FAST,
                    **env,
                }
            )
            runtime = await open_runtime(settings, clock=clock)
            exits.push_async_callback(runtime.aclose)
            log = log if log is not None else Log()
            scheduler = Scheduler(
                lookups=Recording(runtime.lookups, log),  # type: ignore[arg-type]
                watches=WatchStore(runtime.redis),
                redis=runtime.redis,
                poll_interval=poll,
                clock=clock,
            )
            return Replica(runtime, scheduler, log)

        yield make


async def watch(redis: aioredis.Redis, *task_ids: str) -> None:
    store = WatchStore(redis)
    for task_id in task_ids:
        await store.add(task=TaskRef(TEST_PROJECT_ID, task_id), channel="C1", created_by="U1")


async def run_for(seconds: float, *schedulers: Scheduler) -> None:
    stop = asyncio.Event()
    loops = [asyncio.create_task(s.run(stop)) for s in schedulers]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*loops)


async def run_until(done: Callable[[], bool], *schedulers: Scheduler) -> None:
    stop = asyncio.Event()
    loops = [asyncio.create_task(s.run(stop)) for s in schedulers]
    try:
        await until(done, what="the schedulers' refreshes")
    finally:
        stop.set()
        await asyncio.gather(*loops)


def gaps(starts: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(starts)]


async def test_never_fetched_first_then_oldest_first(
    make_hss_sim: MakeSim, make_replica: MakeReplica, redis: aioredis.Redis
) -> None:
    # Ages on a clock in the test's hand (the scheduler's and the lookup service's; HSS
    # calls still stamp real time): "younger than poll_interval" holds however slowly a
    # loaded machine runs the refreshes.
    clock = SimClock()
    sim = await make_hss_sim(rate_limit=5, window=0.5)
    rep = await make_replica(sim, poll=0.3, clock=clock)
    await watch(redis, "a", "b", "c", "d")
    await rep.lookups.refresh(LookupRequest("c"))
    await rep.lookups.refresh(LookupRequest("a"))
    clock.now = time.time() + 0.3  # c and a are a poll interval old, b and d never fetched
    done = [await rep.scheduler.run_once() for _ in range(4)]
    assert [r.task_id if r else None for r in done] == ["b", "d", "c", "a"]
    assert await rep.scheduler.run_once() is None  # everything younger than poll_interval
    # It waits exactly until the oldest, b, comes due (plus the loop's hair of slack).
    b_at = (await rep.lookups.peek(LookupRequest("b"))).answer.fetched_at
    assert b_at is not None and clock.now - b_at < 0.3
    assert 0 < rep.scheduler.next_wait == pytest.approx(b_at + 0.3 - clock.now + 0.005, abs=1e-3)
    clock.advance(rep.scheduler.next_wait)
    again = await rep.scheduler.run_once()
    assert again is not None and again.task_id == "b"
    assert sim.sim.throttled == 0


async def test_no_task_refreshed_more_often_than_poll_interval(
    make_hss_sim: MakeSim, make_replica: MakeReplica, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim()  # a generous budget: the poll interval is the limit
    rep = await make_replica(sim, HSS_RATE_LIMIT="1000/60s")
    await watch(redis, "a", "b", "c")
    steps = 0
    run_once = rep.scheduler.run_once

    async def counted() -> TaskRef | None:
        nonlocal steps
        steps += 1
        return await run_once()

    rep.scheduler.run_once = counted  # type: ignore[method-assign]
    # Until each task came round five times, not for a fixed time: a loaded machine makes
    # fewer rounds a second, never shorter gaps.
    started = time.time()
    await run_until(lambda: all(len(rep.log.starts(t)) >= 5 for t in "abc"), rep.scheduler)
    seconds = time.time() - started
    for task in "abc":
        starts = rep.log.starts(task)
        assert 5 <= len(starts) <= seconds / POLL + 1
        assert min(gaps(starts)) >= POLL
    # It sleeps until the next task is due instead of spinning.
    assert steps <= 3 * len(rep.log.refreshes)


async def test_fair_round_robin_at_the_pace_of_the_budget(
    make_hss_sim: MakeSim, make_replica: MakeReplica, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim(rate_limit=5, window=0.5)
    rep = await make_replica(sim)
    tasks = [f"task-{i:02d}" for i in range(10)]
    await watch(redis, *tasks)
    seconds = 5.0
    await run_for(seconds, rep.scheduler)
    counts = [len(rep.log.starts(t)) for t in tasks]
    assert max(counts) - min(counts) <= 1  # nobody starves, nobody is served twice as often
    # Background calls leave one slot a window for people: 4 of 5 calls a (padded) window
    # go to the scheduler, so each of W tasks comes round every W/4 windows.
    window = rep.runtime.settings.rate_limit.padded().window
    period = len(tasks) / 4 * window
    assert sum(counts) >= 0.8 * seconds / period * len(tasks)  # the budget is not left idle
    for task in tasks:
        assert max(gaps(rep.log.starts(task))) <= 1.35 * period
    assert sim.sim.throttled == 0


async def test_replicas_share_tasks_and_budget(
    make_hss_sim: MakeSim, make_replica: MakeReplica, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim(rate_limit=5, window=0.5, faults=Faults(latency_ms=30.0))
    log = Log()
    a, b = await make_replica(sim, log=log), await make_replica(sim, log=log)
    tasks = [f"task-{i}" for i in range(6)]
    await watch(redis, *tasks)
    await run_for(3.0, a.scheduler, b.scheduler)
    assert log.overlaps == []
    assert sim.sim.throttled == 0
    assert max(sim.sim.max_in_window.values()) <= 5
    per_task = defaultdict(int)
    for task in log.order():
        per_task[task] += 1
    assert set(per_task) == set(tasks)
    assert max(per_task.values()) - min(per_task.values()) <= 2
    for task in tasks:
        assert min(gaps(log.starts(task))) >= POLL


async def test_a_long_refresh_keeps_its_lease(
    make_hss_sim: MakeSim, make_replica: MakeReplica, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim(rate_limit=5, window=0.5, faults=Faults(latency_ms=1000.0))
    log = Log()
    a, b = await make_replica(sim, log=log), await make_replica(sim, log=log)
    await watch(redis, "slow")
    first = asyncio.create_task(a.scheduler.run_once())
    await asyncio.sleep(0.1)
    # Four lease lifetimes pass while the call is out: the other replica keeps off.
    for _ in range(7):
        assert await b.scheduler.run_once() is None
        assert b.scheduler.next_wait <= a.scheduler.lease_ttl + 0.01
        await asyncio.sleep(0.1)
    assert (await first) == TaskRef(TEST_PROJECT_ID, "slow")
    assert log.overlaps == []
    assert log.order() == ["slow"]


async def test_a_dead_replicas_task_is_taken_over_within_two_poll_intervals(
    make_hss_sim: MakeSim, make_replica: MakeReplica, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim(rate_limit=5, window=0.5)
    poll = 0.5
    live = await make_replica(sim, poll=poll)
    await watch(redis, "orphan")
    ref = live.lookups.ref(LookupRequest("orphan"))
    # A replica took the lease and died before releasing it.
    dead = Lock(redis, keys.scheduler_lease(ref), timeout=live.scheduler.lease_ttl)
    taking = time.time()
    assert await dead.acquire(blocking=False)
    died_at = time.time()
    await run_for(2 * poll + 0.3, live.scheduler)
    taken_over = live.log.starts("orphan")[0]
    # Not before the lease expired (it was set after ``taking``; Redis counts whole ms), and
    # within two poll intervals of the death.
    assert taken_over - taking >= live.scheduler.lease_ttl - 0.001
    assert taken_over - died_at <= 2 * poll


async def test_interactive_lookups_go_before_background_refreshes(
    make_hss_sim: MakeSim, make_replica: MakeReplica, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim(rate_limit=2, window=1.0)
    rep = await make_replica(sim, HSS_RATE_LIMIT="2/1s")
    await watch(redis, "w1", "w2")
    # The window is spent: whoever comes next waits about a second.
    await asyncio.gather(*(rep.lookups.refresh(LookupRequest(t)) for t in ("x1", "x2")))
    stop = asyncio.Event()
    loop = asyncio.create_task(rep.scheduler.run(stop))
    # The scheduler's refresh has begun: the window is spent, it waits for a background slot.
    await until(lambda: bool(rep.log.running), what="a background refresh waiting")

    async def person(task_id: str) -> float:
        await rep.lookups.lookup(LookupRequest(task_id))
        return time.time()

    answered = await asyncio.gather(person("y1"), person("y2"))
    await until(lambda: bool(rep.log.refreshes), what="the background refresh done")
    stop.set()
    await loop
    assert max(answered) < min(end for _, _, end in rep.log.refreshes)
    assert sim.sim.throttled == 0


async def test_hss_errors_are_logged_once_per_task_and_others_go_on(
    make_hss_sim: MakeSim,
    make_replica: MakeReplica,
    redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = await make_hss_sim(rate_limit=5, window=0.5)
    rep = await make_replica(sim)
    await watch(redis, "missing-1", "ok")
    with caplog.at_level(logging.WARNING, logger="bot.alerting.scheduler"):
        await run_for(1.0, rep.scheduler)
    assert len(rep.log.starts("ok")) >= 3
    assert len(rep.log.starts("missing-1")) >= 3
    assert min(gaps(rep.log.starts("missing-1"))) >= POLL
    warned = [r for r in caplog.records if r.name == "bot.alerting.scheduler"]
    assert [r.getMessage().split(":")[0] for r in warned] == [
        "background refresh of task missing-1 failed"
    ]


async def test_an_auth_lockout_idles_the_scheduler_until_cleared(
    make_hss_sim: MakeSim,
    make_replica: MakeReplica,
    redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = await make_hss_sim(rate_limit=5, window=0.5)
    rep = await make_replica(sim)
    await watch(redis, "a", "b")
    sim.sim.queue(401)
    with caplog.at_level(logging.INFO, logger="bot.alerting.scheduler"):
        assert await rep.scheduler.run_once() is None
        assert rep.scheduler.next_wait == pytest.approx(POLL, abs=0.01)
        calls = sum(sim.sim.calls.values()) + sum(sim.sim.auth_failures.values())
        await run_for(4 * POLL, rep.scheduler)
        # It looked again every poll interval, but the lock-out stopped every call.
        assert sum(sim.sim.calls.values()) + sum(sim.sim.auth_failures.values()) == calls
        assert 2 <= len(rep.log.refreshes) <= 6
        assert await rep.lookups.reset_auth() is True
        await run_for(2 * POLL, rep.scheduler)
    fetched = {t for t, _, _ in rep.log.refreshes[-2:]}
    assert fetched == {"a", "b"}
    assert (await rep.lookups.peek(LookupRequest("b"))).answer.has_data
    messages = [r.getMessage() for r in caplog.records if r.name == "bot.alerting.scheduler"]
    assert sum("idle until the HSS authentication lock-out clears" in m for m in messages) == 1
    assert sum("resumed" in m for m in messages) == 1


async def test_a_watch_whose_task_id_is_now_refused_does_not_stop_the_others(
    make_hss_sim: MakeSim,
    make_replica: MakeReplica,
    redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Stored before task ids were checked for hidden characters (the store takes it as
    # given): refreshing it is refused before any call, and every other watch goes on.
    sim = await make_hss_sim(rate_limit=5, window=0.5)
    rep = await make_replica(sim)
    hidden = "t\u200b1"
    await watch(redis, hidden, "ok")
    with caplog.at_level(logging.WARNING, logger="bot.alerting.scheduler"):
        done = [await rep.scheduler.run_once() for _ in range(2)]
    assert [r.task_id for r in done if r is not None] == ["ok"]
    assert rep.log.starts(hidden) and rep.log.starts("ok")
    assert sum(sim.sim.calls.values()) == 1  # only the task that can be asked about
    warned = [r.getMessage() for r in caplog.records if r.name == "bot.alerting.scheduler"]
    assert len(warned) == 1 and "U+200B" in warned[0]
