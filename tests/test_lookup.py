"""The lookup service on real parts: the simulator over HTTP, a real Redis, and several
runtimes on that Redis standing in for replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
import redis.asyncio as aioredis

from bot.config import Settings
from bot.errors import HssAuthError, HssUnavailableError
from bot.mirror import REMOVED
from bot.models import UNKNOWN_STATUS, LookupRequest, SyncStatus
from bot.runtime import Runtime, open_runtime
from bot.sandbox.simulator import Faults
from bot.storage import keys
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, MakeSim, RunningSim
from tests.support import until

MakeRuntime = Callable[..., Awaitable[Runtime]]
FAILED = SyncStatus.FAILED


@pytest.fixture
async def make_runtime(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[MakeRuntime]:
    """``await make_runtime(sim, **env)``: a runtime (one "replica") on the test Redis."""
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


def calls(sim: RunningSim) -> int:
    return sum(sim.sim.calls.values())


async def queued(redis: aioredis.Redis, waiters: str) -> bool:
    return await redis.zcard(waiters) == 1


def names(sim: RunningSim, task: str, status: str | None = None) -> set[str]:
    return {
        r.registry_name
        for r in sim.sim.registries(task)
        if status is None or r.sync_status == status
    }


async def test_fresh_mirror_answers_without_calls(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"t": 57})
    rt = await make_runtime(sim)
    first = await rt.lookups.lookup(LookupRequest("t", FAILED))
    again = await rt.lookups.lookup(LookupRequest("t", FAILED))
    running = await rt.lookups.lookup(
        LookupRequest("t", SyncStatus.RUNNING, types=frozenset({"Harbor"}))
    )
    assert {r.registry_name for r in first.registries} == names(sim, "t", "failed")
    assert again.registries == first.registries
    harbor_running = {
        r.registry_name
        for r in sim.sim.registries("t")
        if r.sync_status == "running" and r.registry_type == "Harbor"
    }
    assert {r.registry_name for r in running.registries} == harbor_running
    assert calls(sim) == 1
    assert first.totals.failed == len(names(sim, "t", "failed"))
    assert first.totals.total == 57


async def test_replicas_share_one_fetch(make_hss_sim: MakeSim, make_runtime: MakeRuntime) -> None:
    sim = await make_hss_sim(task_sizes={"t": 120}, faults=Faults(latency_ms=200.0))
    a, b = await make_runtime(sim), await make_runtime(sim)
    request = LookupRequest("t", FAILED)
    answers = await asyncio.gather(
        *(rt.lookups.refresh(request) for rt in (a, b) for _ in range(5))
    )
    assert calls(sim) == 1
    assert all(
        {r.registry_name for r in ans.registries} == names(sim, "t", "failed") for ans in answers
    )


async def test_large_task_learns_failed_set_from_the_failed_view(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"big": 1200})
    rt = await make_runtime(sim)
    answer = await rt.lookups.refresh(LookupRequest("big", FAILED))
    assert {r.registry_name for r in answer.registries} == names(sim, "big", "failed")
    failed = len(names(sim, "big", "failed"))
    assert failed <= 200
    assert calls(sim) == 2  # one page to learn the size, one for the failed set
    await rt.lookups.lookup(LookupRequest("big", FAILED, types=frozenset({"Harbor"})))
    assert calls(sim) == 2
    running = await rt.lookups.lookup(LookupRequest("big", SyncStatus.RUNNING))
    assert {r.registry_name for r in running.registries} == names(sim, "big", "running")
    assert calls(sim) == 3


async def test_a_fetch_cut_short_changes_nothing(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"t": 450})
    rt = await make_runtime(sim, HSS_FRESH_SECONDS="0")
    await rt.lookups.refresh(LookupRequest("t"))
    ref = rt.lookups.ref(LookupRequest("t"))
    store = rt.lookups._store
    before = await store.load(ref)
    victim = next(r for r in sim.sim.registries("t") if r.sync_status == "finished")
    sim.sim.set_status("t", victim.registry_id, "failed", "boom")
    sim.sim.queue("ok", 503, 503, 503, 503, 503, 503)
    with pytest.raises(HssUnavailableError):
        await rt.lookups.refresh(LookupRequest("t"), max_age=0)
    after = await store.load(ref)
    assert after.generation == before.generation
    assert after.rows[victim.registry_id].status == "finished"
    assert await store.changes(ref) == []


async def test_status_changes_are_recorded_with_their_time(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"t": 30})
    rt = await make_runtime(sim)
    request = LookupRequest("t")
    await rt.lookups.refresh(request)
    victim = next(r for r in sim.sim.registries("t") if r.sync_status != "failed")
    sim.sim.set_status("t", victim.registry_id, "failed", "disk full")
    sim.sim.remove("t", 1, at=29)
    await rt.lookups.refresh(request, max_age=0)
    changes = [c for _, c in await rt.lookups._store.changes(rt.lookups.ref(request))]
    flips = [c for c in changes if c.registry_id == victim.registry_id]
    assert [(c.old, c.new, c.reason) for c in flips] == [
        (victim.sync_status, "failed", "disk full")
    ]
    assert flips[0].at > 0
    assert sum(1 for c in changes if c.new == REMOVED) == 1


async def test_leaving_the_failed_view_is_unknown_until_a_full_fetch(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"big": 1200})
    rt = await make_runtime(sim, HSS_FRESH_SECONDS="0")
    failed_request = LookupRequest("big", FAILED)
    await rt.lookups.refresh(failed_request)
    victim = next(r for r in sim.sim.registries("big") if r.sync_status == "failed")
    sim.sim.set_status("big", victim.registry_id, "finished")
    answer = await rt.lookups.refresh(failed_request, max_age=0)
    assert victim.registry_name not in {r.registry_name for r in answer.registries}
    store, ref = rt.lookups._store, rt.lookups.ref(failed_request)
    assert (await store.load(ref)).rows[victim.registry_id].status == UNKNOWN_STATUS
    assert await store.changes(ref) == []
    everything = await rt.lookups.refresh(
        LookupRequest("big", name=victim.registry_name), max_age=0
    )
    assert victim.registry_id in {r.registry_id for r in everything.registries}
    changes = [c for _, c in await store.changes(ref)]
    assert [(c.old, c.new) for c in changes] == [("failed", "finished")]


async def test_wrong_credentials_stop_calls_until_reset(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim()
    rt = await make_runtime(sim, CLOUD_SDK_SK="not-the-secret")
    for _ in range(3):
        with pytest.raises(HssAuthError) as caught:
            await rt.lookups.refresh(LookupRequest("t"))
        assert caught.value.error_code == "APIGW.0301"
        assert "not-the-secret" not in caught.value.user_message()
    assert sum(sim.sim.auth_failures.values()) == 1
    fixed = await make_runtime(sim)  # a corrected key is a new scope: it may call at once
    assert (await fixed.lookups.refresh(LookupRequest("t"))).has_data
    assert await rt.lookups.reset_auth() is True
    with pytest.raises(HssAuthError):
        await rt.lookups.refresh(LookupRequest("t2"))
    assert sum(sim.sim.auth_failures.values()) == 2


async def test_replicas_never_exceed_the_shared_budget(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    # HSS counts a call when it arrives, the budget when it grants it; on a loaded machine
    # arrivals bunch up by more than the budget's padding of a 0.5 s window (25 ms). The
    # gateway's window is shorter here so only the budget's spacing is tested: replicas
    # each spending their own 2 would still put 6 calls into it.
    sim = await make_hss_sim(rate_limit=2, window=0.3)
    env = {"HSS_RATE_LIMIT": "2/500ms"}
    replicas = [await make_runtime(sim, **env) for _ in range(3)]
    requests = [LookupRequest(f"task-{i}", FAILED) for i in range(9)]
    answers = await asyncio.gather(
        *(replicas[i % 3].lookups.refresh(req) for i, req in enumerate(requests))
    )
    assert all(a.has_data for a in answers)
    assert calls(sim) == 9
    assert sim.sim.throttled == 0
    assert max(sim.sim.max_in_window.values()) <= 2


async def test_waiting_for_the_budget_does_not_make_a_fetch_stale(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(rate_limit=1, window=1.0)
    rt = await make_runtime(sim, HSS_RATE_LIMIT="1/1s", HSS_FRESH_SECONDS="0.3")
    await rt.lookups.refresh(LookupRequest("t", FAILED))  # the mirror now knows its size
    await rt.lookups.refresh(LookupRequest("other", FAILED))  # takes the next slot
    # The refresh of "t" waits about a second for a slot, three times the freshness limit;
    # its data is as old as its request to HSS, not as old as its wait.
    answer = await rt.lookups.refresh(LookupRequest("t", FAILED))
    assert answer.has_data
    assert calls(sim) == 3
    assert sim.sim.throttled == 0


async def test_drain_finishes_a_fetch_whose_call_began_and_drops_one_still_waiting(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim(task_sizes={"a": 30, "b": 30}, faults=Faults(latency_ms=1000.0))
    # One call a minute: "b" waits for a slot the whole test.
    rt = await make_runtime(sim, HSS_RATE_LIMIT="1/60s")
    calling = asyncio.create_task(rt.lookups.refresh(LookupRequest("a")))
    # "a" holds the only slot; its call is in flight (the simulator counts it on arrival).
    await until(lambda: calls(sim) == 1, what="the call of a")
    waiting = asyncio.create_task(rt.lookups.refresh(LookupRequest("b")))
    waiters = keys.budget_waiters(rt.settings.budget_scope)
    await until(lambda: queued(redis, waiters), what="b waiting for a slot")
    loop = asyncio.get_running_loop()
    started = loop.time()

    await rt.lookups.drain(timeout=5.0)

    assert loop.time() - started < 3.0  # not the minute "b" would wait for a slot
    done, _ = await asyncio.wait({calling, waiting}, timeout=1.0)
    assert calling in done and waiting in done
    assert {r.registry_name for r in calling.result().registries} == names(sim, "a")
    assert waiting.cancelled()
    assert (await rt.lookups.peek(LookupRequest("a"))).answer.has_data
    assert not (await rt.lookups.peek(LookupRequest("b"))).answer.has_data
    assert calls(sim) == 1


async def test_drain_gives_up_on_a_call_that_outlasts_its_timeout(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"a": 30}, faults=Faults(latency_ms=5000.0))
    rt = await make_runtime(sim)
    calling = asyncio.create_task(rt.lookups.refresh(LookupRequest("a")))
    await until(lambda: calls(sim) == 1, what="the call in flight")

    await rt.lookups.drain(timeout=0.5)

    await asyncio.wait({calling}, timeout=1.0)
    assert calling.cancelled()
    assert not (await rt.lookups.peek(LookupRequest("a"))).answer.has_data


# --- covering views ---


def named(sim: RunningSim, task: str, part: str) -> set[str]:
    return {n for n in names(sim, task) if part.casefold() in n.casefold()}


async def known_size(rt: Runtime, task: str) -> None:
    """The mirror learns the task's size (a full fetch), so a ``name=`` question alone would
    be a call of its own (a filtered view), not a fetch of everything."""
    await rt.lookups.refresh(LookupRequest(task))


async def test_a_name_question_waits_for_the_covering_fetch(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"big": 450}, faults=Faults(latency_ms=150.0))
    rt = await make_runtime(sim, HSS_FRESH_SECONDS="0")
    await known_size(rt, "big")
    spent = calls(sim)
    whole = asyncio.create_task(rt.lookups.refresh(LookupRequest("big"), max_age=0))
    await until(lambda: calls(sim) > spent, what="the full fetch under way")
    part = next(iter(names(sim, "big")))[:6]
    narrow, typed = await asyncio.gather(
        rt.lookups.refresh(LookupRequest("big", name=part), max_age=0),
        rt.lookups.refresh(LookupRequest("big", FAILED, types=frozenset({"Harbor"})), max_age=0),
    )
    await whole
    assert calls(sim) - spent == 3, "only the full view's three pages"
    assert {r.registry_name for r in narrow.registries} == named(sim, "big", part)
    assert narrow.has_data and typed.has_data
    harbor_failed = {
        r.registry_name
        for r in sim.sim.registries("big")
        if r.sync_status == "failed" and r.registry_type == "Harbor"
    }
    assert {r.registry_name for r in typed.registries} == harbor_failed


async def test_a_name_question_waits_for_another_replicas_covering_fetch(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"big": 450}, faults=Faults(latency_ms=150.0))
    a = await make_runtime(sim, HSS_FRESH_SECONDS="0")
    b = await make_runtime(sim, HSS_FRESH_SECONDS="0")
    await known_size(a, "big")
    spent = calls(sim)
    whole = asyncio.create_task(a.lookups.refresh(LookupRequest("big"), max_age=0))
    await until(lambda: calls(sim) > spent, what="the full fetch under way on replica a")
    part = next(iter(names(sim, "big")))[:6]
    narrow = await b.lookups.refresh(LookupRequest("big", name=part), max_age=0)
    await whole
    assert calls(sim) - spent == 3, "replica b spent nothing"
    assert {r.registry_name for r in narrow.registries} == named(sim, "big", part)


async def test_when_the_covering_fetch_fails_the_question_asks_on_its_own(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"big": 450})
    rt = await make_runtime(sim, HSS_FRESH_SECONDS="0")
    await known_size(rt, "big")
    spent = calls(sim)
    sim.sim.queue("ok", 503, 503, 503)  # page 2 of the full view fails: 3 attempts
    whole = asyncio.create_task(rt.lookups.refresh(LookupRequest("big"), max_age=0))
    await until(lambda: calls(sim) > spent, what="the full fetch under way")
    part = next(iter(names(sim, "big")))[:6]
    narrow = await rt.lookups.refresh(LookupRequest("big", name=part), max_age=0)
    with pytest.raises(HssUnavailableError):
        await whole
    assert {r.registry_name for r in narrow.registries} == named(sim, "big", part)
    # The failed fetch's attempts, then one call of the question's own.
    assert calls(sim) - spent == 1 + 3 + 1


async def test_a_question_joining_a_size_probe_plans_again_once_the_size_is_known(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"big": 1200}, faults=Faults(latency_ms=250.0))
    a = await make_runtime(sim)
    b = await make_runtime(sim)
    whole = asyncio.create_task(a.lookups.refresh(LookupRequest("big")))  # 6 pages
    await until(lambda: bool(a.lookups._inflight), what="the first page asked for")
    # Asked while the first page is on its way: it joins the fetch of everything (the
    # size is unknown), then asks for the failed view alone once the first page told it.
    failed = await a.lookups.refresh(LookupRequest("big", FAILED))
    assert not whole.done(), "answered before the fetch of every page"
    assert {r.registry_name for r in failed.registries} == names(sim, "big", "failed")
    # Another replica knows the size from the mirror at once, and plans by it.
    ref = a.lookups.ref(LookupRequest("big"))
    assert (await b.lookups._store.load(ref)).task_total == 1200
    await whole
    assert calls(sim) == 6 + 1


async def test_a_status_question_of_many_pages_waits_for_the_whole_task_instead(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime
) -> None:
    sim = await make_hss_sim(task_sizes={"big": 1200}, faults=Faults(latency_ms=100.0))
    rt = await make_runtime(sim)
    whole = asyncio.create_task(rt.lookups.refresh(LookupRequest("big")))  # 6 pages
    # Asked once the first page told the task's size, while the other pages are on their
    # way: the finished view alone would be cheaper than everything, but not one call.
    await until(lambda: calls(sim) >= 2, what="the first page in")
    finished = SyncStatus.FINISHED
    assert len(names(sim, "big", "finished")) > 200, "the finished view is several pages"
    answer = await rt.lookups.refresh(LookupRequest("big", finished))
    await whole
    assert calls(sim) == 6, "no page of the finished view of its own"
    assert {r.registry_name for r in answer.registries} == names(sim, "big", "finished")
