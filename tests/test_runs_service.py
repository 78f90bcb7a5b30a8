"""The runs' snapshot (``RunsStore``) and ``RunsService`` against real Redis and the HSS
simulator over HTTP: one list call shared in a process and across replicas, ``max_age``, a
refused list remembered without locking lookups, and the task references."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bot.config import Settings
from bot.errors import (
    CommandError,
    HssAuthError,
    HssUnavailableError,
    RunsUnavailable,
)
from bot.hss.budget import Priority
from bot.models import LookupRequest
from bot.runs import RunKind, SyncRun, newest_first
from bot.runs_service import (
    RECHECK_AGE,
    RunsService,
    filter_runs,
    is_reference,
    reference_kind,
    refuses_the_list,
)
from bot.runtime import Runtime, open_runtime
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.storage.runs_store import RunsSnapshot, RunsStore, decode_runs, encode_runs
from tests.plugins.hss_sim import TEST_PROJECT_ID, MakeSim, RunningSim
from tests.support import Clock, hss_env

WRONG_SK = "SK-wrong-secret-0000000000000000000000000"


@contextlib.asynccontextmanager
async def runtime_for(running: RunningSim, redis_url: str, **env: str) -> AsyncIterator[Runtime]:
    settings = Settings.from_env({**hss_env(running.url, REDIS_URL=redis_url), **env})
    runtime = await open_runtime(settings)
    try:
        yield runtime
    finally:
        await runtime.aclose()


def tasks_calls(running: RunningSim) -> int:
    return sum(running.sim.apis["tasks"].calls.values())


def listed(running: RunningSim) -> tuple[SyncRun, ...]:
    return tuple(
        SyncRun(**{k: v for k, v in info.items() if k != "remain_min"})
        for info in running.sim.listed_runs()
    )


RUN_A = SyncRun(task_id="a", task_name="Nightly <sync>", task_type="autoSync", begin_time=2000)
RUN_B = SyncRun(
    task_id="b",
    task_name="by hand",
    task_type="manualSync",
    begin_time=3000,
    end_time=None,
    task_status=40,
    failed_num=2,
    success_num=5,
    total_num=10,
    failed_reason="SWR \u201cdenied\u201d",
)


# --- the store ---------------------------------------------------------------------------------


async def test_the_store_round_trips_and_keeps_the_newer_snapshot(redis: aioredis.Redis) -> None:
    store = RunsStore(redis)
    assert await store.load(TEST_PROJECT_ID, None) is None
    newer = RunsSnapshot(runs=(RUN_B, RUN_A), fetched_at=200.5)
    older = RunsSnapshot(runs=(RUN_A,), fetched_at=100.0)
    await store.save(TEST_PROJECT_ID, None, newer)
    await store.save(TEST_PROJECT_ID, None, older)  # finished later, asked earlier: dropped
    assert await store.load(TEST_PROJECT_ID, None) == newer
    assert await store.load(TEST_PROJECT_ID, "ep-1") is None  # each ep its own
    newest = RunsSnapshot(runs=(), fetched_at=300.0)
    await store.save(TEST_PROJECT_ID, None, newest)
    assert await store.load(TEST_PROJECT_ID, None) == newest
    assert await store.fetched_at(TEST_PROJECT_ID, None) == 300.0


def test_the_encoding_is_compact_and_refuses_what_it_did_not_write() -> None:
    raw = encode_runs((RUN_B, RUN_A))
    assert '"task_id"' not in raw and ": " not in raw  # no names repeated, no padding
    assert decode_runs(raw) == (RUN_B, RUN_A)
    assert decode_runs(raw.encode()) == (RUN_B, RUN_A)
    for broken in (
        "{",
        "[]",
        '{"v": 2, "runs": []}',
        '{"v": 1, "runs": [["a"]]}',
        '{"v": 1, "runs": [[1, "", "", null, null, null, 0, 0, 0, ""]]}',
        '{"v": 1, "runs": [["a", "", "", null, null, null, true, 0, 0, ""]]}',
        '{"v": 1, "runs": [["a", "", "", "x", null, null, 0, 0, 0, ""]]}',
        '{"v": 1}',
    ):
        assert decode_runs(broken) is None, broken


async def test_an_unreadable_stored_list_reads_as_none(redis: aioredis.Redis) -> None:
    await redis.hset(keys.runs(TEST_PROJECT_ID, None), mapping={"at": "12", "runs": "garbage"})
    assert await RunsStore(redis).load(TEST_PROJECT_ID, None) is None


# --- pure parts --------------------------------------------------------------------------------


def test_references_and_filters() -> None:
    assert all(is_reference(w) for w in ("latest", "Latest-Auto", "LATEST-MANUAL"))
    assert not any(is_reference(w) for w in ("latest-", "latest-scan", "task-1", "", "latest "))
    assert reference_kind("latest") is None
    assert reference_kind("latest-auto") is RunKind.AUTO
    assert reference_kind("latest-manual") is RunKind.MANUAL
    with pytest.raises(CommandError, match="`latest`, `latest-auto`, `latest-manual`"):
        reference_kind("newest")
    runs = (RUN_B, RUN_A)
    assert filter_runs(runs, kind=None, name=None, failed=False) == runs
    assert filter_runs(runs, kind=RunKind.AUTO, name=None, failed=False) == (RUN_A,)
    assert filter_runs(runs, kind=None, name="NIGHTLY <", failed=False) == (RUN_A,)
    assert filter_runs(runs, kind=None, name=None, failed=True) == (RUN_B,)
    assert filter_runs(runs, kind=RunKind.AUTO, name=None, failed=True) == ()


def test_which_errors_mean_the_list_is_refused() -> None:
    from bot.errors import HssRequestError
    from bot.hss.guards import locked_error

    def err(status: int, code: str) -> HssRequestError:
        return HssRequestError(error_code=code, error_msg="", status=status)

    assert refuses_the_list(err(403, "APIGW.0302"))
    assert refuses_the_list(err(404, "APIGW.0101"))
    assert refuses_the_list(err(400, "APIGW.0101"))
    assert not refuses_the_list(err(400, "HSS.0001"))
    assert not refuses_the_list(err(503, "APIGW.0201"))
    # The lock-out after a 403 of the other API is no answer about the list.
    assert not refuses_the_list(locked_error({"error_code": "APIGW.0302", "status": 403}))


# --- refreshing --------------------------------------------------------------------------------


async def test_one_call_lists_the_newest_runs_and_max_age_spares_calls(
    make_hss_sim: MakeSim, redis: aioredis.Redis, redis_url: str
) -> None:
    running = await make_hss_sim(run_history=250, run_registries=10)
    async with runtime_for(running, redis_url) as runtime:
        assert await runtime.runs.peek() is None
        snap = await runtime.runs.refresh(priority=Priority.INTERACTIVE)
        assert snap.runs == newest_first(listed(running)[:200])
        assert tasks_calls(running) == 1
        assert running.sim.apis["registries"].calls == {}
        assert await runtime.runs.peek() == snap
        again = await runtime.runs.refresh(priority=Priority.BACKGROUND, max_age=60)
        assert again == snap and tasks_calls(running) == 1
        fresher = await runtime.runs.refresh(priority=Priority.BACKGROUND)
        assert tasks_calls(running) == 2 and fresher.fetched_at > snap.fetched_at


async def test_identical_refreshes_share_one_call_in_a_process_and_across_replicas(
    make_hss_sim: MakeSim, redis: aioredis.Redis, redis_url: str
) -> None:
    running = await make_hss_sim(run_history=5, run_registries=10)
    running.sim.set_faults(latency_ms=400)  # the first call is still out when the others ask
    async with (
        runtime_for(running, redis_url) as one,
        runtime_for(running, redis_url) as two,
    ):
        snaps = await asyncio.gather(
            *(one.runs.refresh(priority=Priority.INTERACTIVE) for _ in range(5)),
            *(two.runs.refresh(priority=Priority.BACKGROUND) for _ in range(5)),
        )
    assert tasks_calls(running) == 1
    assert all(snap == snaps[0] for snap in snaps)
    assert snaps[0].runs == listed(running)


async def test_errors_that_are_not_a_refusal_are_raised_and_not_remembered(
    hss_sim: RunningSim, redis: aioredis.Redis, redis_url: str
) -> None:
    hss_sim.sim.queue(503, 503, 503)
    async with runtime_for(hss_sim, redis_url) as runtime:
        with pytest.raises(HssUnavailableError):
            await runtime.runs.refresh(priority=Priority.INTERACTIVE)
        assert await redis.exists(keys.runs_refused(TEST_PROJECT_ID, None)) == 0
        snap = await runtime.runs.refresh(priority=Priority.INTERACTIVE)
    assert snap.runs == listed(hss_sim)
    assert tasks_calls(hss_sim) == 4  # three 503s (one refresh), then the next refresh


@pytest.mark.parametrize("status", [403, 404])
async def test_a_refused_list_is_one_sentence_remembered_and_lookups_go_on(
    make_hss_sim: MakeSim, redis: aioredis.Redis, redis_url: str, status: int
) -> None:
    running = await make_hss_sim(run_history=3, run_registries=10)
    running.sim.queue(status)
    async with (
        runtime_for(running, redis_url) as runtime,
        runtime_for(running, redis_url) as other,
    ):
        with pytest.raises(RunsUnavailable) as caught:
            await runtime.runs.refresh(priority=Priority.INTERACTIVE)
        message = caught.value.user_message()
        assert message.startswith("The list of sync runs is unavailable (")
        assert message.endswith("plain task ids keep working.")
        assert message.count(". ") == 0 and f"SIM.{status}" in message
        by_status = dict(running.sim.by_status)
        # Remembered, for every replica: no second call.
        for service in (runtime.runs, other.runs):
            with pytest.raises(RunsUnavailable):
                await service.refresh(priority=Priority.INTERACTIVE)
            with pytest.raises(RunsUnavailable):
                await service.resolve("latest", priority=Priority.INTERACTIVE)
        assert running.sim.by_status == by_status
        ttl = await redis.pttl(keys.runs_refused(TEST_PROJECT_ID, None))
        assert 290_000 < ttl <= 300_000
        # Not the AK/SK's lock-out: a lookup by task id calls the other API.
        assert await runtime.lookups.auth_lock() is None
        run = listed(running)[0]
        answer = await runtime.lookups.refresh(LookupRequest(run.task_id))
        assert answer.totals is not None
        assert running.sim.apis["registries"].calls
        # Once it is forgotten (a permission granted), the list is called again.
        await redis.delete(keys.runs_refused(TEST_PROJECT_ID, None))
        snap = await other.runs.refresh(priority=Priority.INTERACTIVE)
        assert snap.runs == listed(running)


async def test_a_wrong_secret_still_locks_both_apis_and_is_no_refusal(
    hss_sim: RunningSim, redis: aioredis.Redis, redis_url: str
) -> None:
    async with runtime_for(hss_sim, redis_url, CLOUD_SDK_SK=WRONG_SK) as runtime:
        with pytest.raises(HssAuthError) as caught:
            await runtime.runs.refresh(priority=Priority.INTERACTIVE)
        assert not isinstance(caught.value, RunsUnavailable)
        assert await runtime.lookups.auth_lock() is not None
        assert await redis.exists(keys.runs_refused(TEST_PROJECT_ID, None)) == 0
        with pytest.raises(HssAuthError) as again:  # the lock-out, without a call
            await runtime.runs.refresh(priority=Priority.INTERACTIVE)
        assert not isinstance(again.value, RunsUnavailable)
    assert hss_sim.sim.by_status == {401: 1}


async def test_a_refresh_lock_holder_that_dies_frees_the_list(
    hss_sim: RunningSim, redis: aioredis.Redis, redis_url: str
) -> None:
    async with runtime_for(hss_sim, redis_url) as runtime:
        service = RunsService(
            redis=runtime.redis,
            client=runtime.client,
            project_id=TEST_PROJECT_ID,
            ep=None,
            lock_ttl=0.3,
            poll=0.02,
        )
        # A replica took the lock and died: it expires, and the waiter calls itself.
        await redis.set(keys.runs_refresh_lock(TEST_PROJECT_ID, None), "dead", px=300)
        snap = await service.refresh(priority=Priority.INTERACTIVE)
        await service.aclose()
    assert snap.runs == listed(hss_sim) and tasks_calls(hss_sim) == 1


# --- references --------------------------------------------------------------------------------


async def test_references_resolve_to_the_newest_run_of_their_kind(
    make_hss_sim: MakeSim, redis: aioredis.Redis, redis_url: str
) -> None:
    running = await make_hss_sim(run_history=4, run_registries=10, run_every=3600)
    async with runtime_for(running, redis_url) as runtime:
        with pytest.raises(CommandError, match="HSS lists no manualSync sync runs"):
            await runtime.runs.resolve("latest-manual", priority=Priority.INTERACTIVE)
        assert tasks_calls(running) == 1
        manual = running.sim.start_run("manual")
        # Young snapshot: answered from it (the manual run is not in it yet).
        auto = await runtime.runs.resolve("Latest-Auto", priority=Priority.INTERACTIVE)
        newest_auto = next(r for r in listed(running) if r.task_type == "autoSync")
        assert auto.task_id == newest_auto.task_id and tasks_calls(running) == 1
        # An older one is refreshed first.
        found = await runtime.runs.resolve("latest", priority=Priority.INTERACTIVE, max_age=0)
        assert found.task_id == manual.task_id and tasks_calls(running) == 2
        found = await runtime.runs.resolve("latest-manual", priority=Priority.INTERACTIVE)
        assert found.task_id == manual.task_id and tasks_calls(running) == 2
        with pytest.raises(CommandError):
            await runtime.runs.resolve("task-1", priority=Priority.INTERACTIVE)


async def test_an_empty_list_names_no_run(
    make_hss_sim: MakeSim, redis: aioredis.Redis, redis_url: str
) -> None:
    running = await make_hss_sim(run_history=0, run_every=None, run_registries=10)
    async with runtime_for(running, redis_url) as runtime:
        with pytest.raises(CommandError) as caught:
            await runtime.runs.resolve("latest", priority=Priority.INTERACTIVE)
    assert "HSS lists no sync runs, so `latest` names no task" in caught.value.user_message()


async def test_a_reference_naming_no_run_in_an_older_list_looks_again(
    make_hss_sim: MakeSim, redis: aioredis.Redis, redis_url: str
) -> None:
    running = await make_hss_sim(run_history=2, run_registries=10)
    clock = Clock(time.time())
    async with runtime_for(running, redis_url) as runtime:
        service = RunsService(
            redis=runtime.redis,
            client=runtime.client,
            project_id=TEST_PROJECT_ID,
            ep=None,
            clock=clock,
        )
        await service.refresh(priority=Priority.INTERACTIVE)
        manual = running.sim.start_run("manual")
        clock.now += 2  # younger than RECHECK_AGE: "none" stands, no call
        with pytest.raises(CommandError):
            await service.resolve("latest-manual", priority=Priority.INTERACTIVE)
        assert tasks_calls(running) == 1
        clock.now += RECHECK_AGE  # older: one more look finds the run just started
        found = await service.resolve("latest-manual", priority=Priority.INTERACTIVE)
        assert found.task_id == manual.task_id and tasks_calls(running) == 2
        await service.aclose()


# --- Redis away ----------------------------------------------------------------------------------


async def test_with_redis_away_the_runs_go_on_from_this_process_s_memory(
    make_hss_sim: MakeSim, redis_server: EmbeddedRedis
) -> None:
    # As lookups by task id do: what this process knew still answers, a refresh calls HSS
    # through this process's budget and is kept here, and a refusal is remembered here too.
    running = await make_hss_sim(run_history=3, run_registries=10)
    async with runtime_for(running, redis_server.url) as runtime:
        known = await runtime.runs.refresh(priority=Priority.INTERACTIVE)
        await asyncio.to_thread(redis_server.stop)
        assert await runtime.runs.peek() == known
        newest = await runtime.runs.resolve("latest", priority=Priority.INTERACTIVE)
        assert newest == known.runs[0] and tasks_calls(running) == 1
        manual = running.sim.start_run("manual")
        fresher = await runtime.runs.refresh(priority=Priority.INTERACTIVE)
        assert fresher.runs[0].task_id == manual.task_id and tasks_calls(running) == 2
        assert await runtime.runs.peek() == fresher
        running.sim.queue(403)
        with pytest.raises(RunsUnavailable):
            await runtime.runs.refresh(priority=Priority.INTERACTIVE)
        with pytest.raises(RunsUnavailable):  # remembered: no second call
            await runtime.runs.refresh(priority=Priority.INTERACTIVE)
        assert tasks_calls(running) == 3
        await asyncio.to_thread(redis_server.start)
