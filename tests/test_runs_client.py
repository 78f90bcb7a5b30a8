"""``HssClient.list_runs``/``fetch_runs`` (ListImageScanTask) against the HSS simulator over
real HTTP: paging to HSS's 1000, each API's own budget (Redis, shared), 429s per API, the
authentication lock-out both APIs share, log lines and, with the official SDK, the field
names the link to ListAssociateRegistries rests on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.config import RateLimit, Settings
from bot.errors import CommandError, HssAuthError, HssThrottledError
from bot.hss.budget import CallBudget, LocalCallBudget, RedisCallBudget
from bot.hss.client import HssClient
from bot.models import ApiFilter, HssApi, LookupRequest, TaskRef
from bot.runs import RunFilter, RunKind, SyncRun
from bot.runtime import open_runtime
from bot.storage import keys
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, MakeSim, RunningSim, SimClock
from tests.support import RecordingBudget, RecordingTransport

WRONG_SK = "SK-wrong-secret-0000000000000000000000000"


@contextlib.asynccontextmanager
async def client_for(running: RunningSim, **kwargs: Any) -> AsyncIterator[HssClient]:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("credentials", running.credentials)
    async with HssClient(endpoint=running.url, project_id=running.project_id, **kwargs) as client:
        yield client


def as_run(info: dict[str, Any]) -> SyncRun:
    """A simulator's ``ImageScanTaskInfo`` as the ``SyncRun`` it should read as."""
    return SyncRun(**{k: v for k, v in info.items() if k != "remain_min"})


def simulated(running: RunningSim) -> list[SyncRun]:
    """Every run the simulator lists now, newest first."""
    return [as_run(info) for info in running.sim.listed_runs()]


# --- listing and paging ----------------------------------------------------------------------


async def test_fetch_runs_pages_through_hss_s_1000(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(run_history=1005, run_registries=10)
    async with client_for(running) as client:
        result = await client.fetch_runs(RunFilter(), limit=200)
    assert result.total_num == 1000
    assert list(result.runs) == simulated(running)
    assert len({run.task_id for run in result.runs}) == 1000
    assert result.calls == 5 == running.sim.apis["tasks"].calls[TEST_AK]
    assert running.sim.apis["registries"].calls == {}
    assert 0 < result.started_at <= result.finished_at


async def test_list_runs_sends_the_filter_and_reads_one_page(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(run_history=4, run_registries=10)
    manual = running.sim.start_run("manual")
    transport = RecordingTransport()
    async with client_for(running, transport=transport) as client:
        page = await client.list_runs(
            RunFilter(kind=RunKind.MANUAL, name=manual.task_name[:12]), limit=10, ep="0"
        )
        everything = await client.list_runs(RunFilter(), offset=2, limit=10)
    assert running.sim.by_status == {200: 2}  # a 401 would be a signing mismatch
    assert page.runs == (as_run(running.sim.run_info(manual)),)
    assert page.total_num == 1 and len(page.request_id) == 32 and page.sent_at > 0
    assert transport.targets[0] == (
        f"/v5/{TEST_PROJECT_ID}/image/tasks?enterprise_project_id=0&limit=10&offset=0"
        f"&task_name={manual.task_name[:12]}&task_type=manualSync&type=image_sync"
    )
    assert everything.total_num == 5
    assert list(everything.runs) == simulated(running)[2:]


async def test_out_of_range_parameters_make_no_call(hss_sim: RunningSim) -> None:
    budget = RecordingBudget()
    async with client_for(hss_sim, tasks_budget=budget) as client:
        with pytest.raises(CommandError, match="1-256"):
            await client.list_runs(RunFilter(name=""))
        with pytest.raises(CommandError, match="10 to 200"):
            await client.fetch_runs(RunFilter(), limit=500)
    assert hss_sim.sim.by_status == {}
    assert budget.acquired == []


async def test_runs_appearing_between_pages_restart_the_fetch_once(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(run_history=300, run_registries=10)

    def start_before_page_two(n: int) -> None:
        if n == 2:
            running.sim.start_run("manual")

    budget = RecordingBudget(on_acquire=start_before_page_two)
    async with client_for(running, tasks_budget=budget) as client:
        result = await client.fetch_runs(RunFilter(), limit=100)
    assert list(result.runs) == simulated(running)
    assert result.total_num == 301
    # Page 2 showed the new total: that pass stops, and a fresh one takes 4 pages.
    assert result.calls == 2 + 4 == len(budget.acquired)


async def test_a_shift_under_the_cap_of_1000_is_caught_too(make_hss_sim: MakeSim) -> None:
    # At the cap total_num stays 1000 when a run begins: a row seen twice gives it away.
    running = await make_hss_sim(run_history=1005, run_registries=10)

    def start_before_page_two(n: int) -> None:
        if n == 2:
            running.sim.start_run("auto")

    budget = RecordingBudget(on_acquire=start_before_page_two)
    async with client_for(running, tasks_budget=budget) as client:
        result = await client.fetch_runs(RunFilter(), limit=200)
    assert list(result.runs) == simulated(running)
    assert result.calls == 5 + 5


# --- each API its own budget -----------------------------------------------------------------


async def test_list_calls_spend_only_the_tasks_budget(
    make_hss_sim: MakeSim, redis: aioredis.Redis
) -> None:
    running = await make_hss_sim(run_history=2, run_registries=10)
    limit = RateLimit(5, 60.0)
    registries = RedisCallBudget(redis, scope="runs-test", limit=limit)
    tasks = RedisCallBudget(redis, scope="runs-test", limit=limit, api=HssApi.TASKS)
    async with client_for(running, budget=registries, tasks_budget=tasks) as client:
        await client.list_runs(RunFilter())
        await client.fetch_runs(RunFilter())
        assert (await registries.calls_left(), await tasks.calls_left()) == (5, 3)
        await client.list_page(TaskRef(TEST_PROJECT_ID, "task-1"), ApiFilter())
        assert (await registries.calls_left(), await tasks.calls_left()) == (4, 3)
    assert await redis.zcard(keys.budget_log("runs-test", HssApi.TASKS)) == 2
    assert await redis.zcard(keys.budget_log("runs-test")) == 1
    assert keys.budget_log("runs-test") == "hss:budget:runs-test:log"  # as before issue 10


#: The simulator's limit, per API; the budgets keep a margin (see test_hss_client.LIMIT).
#: Two APIs' calls at once on a loaded machine bunched up by more than 30 ms (a 429): 100 ms.
LIMIT = RateLimit(3, 0.3)
BUDGET_LIMIT = RateLimit(LIMIT.calls, LIMIT.window + 0.1)


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "in-process"])
async def test_both_budgets_at_once_each_keep_to_their_own_limit(
    make_hss_sim: MakeSim, redis: aioredis.Redis, shared: bool
) -> None:
    running = await make_hss_sim(
        task_sizes={"big": 600},
        run_history=600,
        run_registries=10,
        rate_limit=LIMIT.calls,
        window=LIMIT.window,
    )
    budgets: list[CallBudget] = (
        [
            RedisCallBudget(redis, scope="both", limit=BUDGET_LIMIT),
            RedisCallBudget(redis, scope="both", limit=BUDGET_LIMIT, api=HssApi.TASKS),
        ]
        if shared
        else [LocalCallBudget(limit=BUDGET_LIMIT), LocalCallBudget(limit=BUDGET_LIMIT)]
    )
    async with client_for(running, budget=budgets[0], tasks_budget=budgets[1]) as client:
        registries, runs = await asyncio.gather(
            client.fetch_all(TaskRef(TEST_PROJECT_ID, "big"), ApiFilter(), limit=100),
            client.fetch_runs(RunFilter(), limit=100),
        )
    assert len(registries.registries) == 600 and len(runs.runs) == 600
    stats = running.sim.stats()
    assert stats["throttled"] == 0, stats["apis"]
    for api in ("registries", "tasks"):
        assert stats["apis"][api]["calls"] == {TEST_AK: 6}
        assert stats["apis"][api]["max_in_window"][TEST_AK] <= LIMIT.calls
    for result in (registries, runs):
        assert result.finished_at - result.started_at >= LIMIT.window  # each really waited


async def test_a_429_is_honoured_per_api(make_hss_sim: MakeSim) -> None:
    clock = SimClock()
    running = await make_hss_sim(
        clock=clock, rate_limit=1, window=30, retry_after=True, run_history=3, run_registries=10
    )
    registries, tasks = RecordingBudget(), RecordingBudget()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:  # the simulator's time moves instead of ours
        sleeps.append(seconds)
        clock.advance(seconds)

    async with client_for(running, budget=registries, tasks_budget=tasks, sleep=sleep) as client:
        await client.list_runs(RunFilter())
        page = await client.list_runs(RunFilter(), offset=1, limit=10)  # throttled, then served
        assert sleeps == [30.0] and tasks.penalties == [30.0]
        # The registries API has a window of its own: no 429, no wait, no penalty.
        await client.list_page(TaskRef(TEST_PROJECT_ID, "task-1"), ApiFilter())
    assert page.total_num == 3
    assert registries.penalties == [] and sleeps == [30.0]
    assert running.sim.apis["tasks"].throttled == 1
    assert running.sim.apis["registries"].throttled == 0


async def test_a_throttled_list_gives_up_after_max_throttles(hss_sim: RunningSim) -> None:
    hss_sim.sim.queue(429, 429)
    tasks = RecordingBudget()
    async with client_for(hss_sim, tasks_budget=tasks, max_throttles=2) as client:
        with pytest.raises(HssThrottledError):
            await client.list_runs(RunFilter())
    assert tasks.penalties == [None, None]


# --- one AK/SK pair, one lock-out ------------------------------------------------------------


def runtime_env(running: RunningSim, redis_url: str, **env: str) -> dict[str, str]:
    return {
        "CLOUD_SDK_AK": TEST_AK,
        "CLOUD_SDK_SK": TEST_SK,
        "HSS_PROJECT_ID": TEST_PROJECT_ID,
        "HSS_ENDPOINT": running.url,
        "REDIS_URL": redis_url,
        **env,
    }


async def test_a_401_on_the_list_api_locks_the_pair_for_both(
    hss_sim: RunningSim, redis: aioredis.Redis, redis_url: str
) -> None:
    env = runtime_env(hss_sim, redis_url, CLOUD_SDK_SK=WRONG_SK)
    runtime = await open_runtime(Settings.from_env(env))
    try:
        with pytest.raises(HssAuthError):
            await runtime.client.list_runs(RunFilter())
        with pytest.raises(HssAuthError):  # the other API: refused without a call
            await runtime.lookups.refresh(LookupRequest("task-1"))
        with pytest.raises(HssAuthError):
            await runtime.client.fetch_runs(RunFilter())
    finally:
        await runtime.aclose()
    assert hss_sim.sim.by_status == {401: 1}
    assert sum(hss_sim.sim.auth_failures.values()) == 1


async def test_the_runtime_builds_the_tasks_budget_from_its_setting(
    hss_sim: RunningSim, redis: aioredis.Redis, redis_url: str
) -> None:
    env = runtime_env(hss_sim, redis_url, HSS_TASKS_RATE_LIMIT="2/60s")
    runtime = await open_runtime(Settings.from_env(env))
    try:
        assert await runtime.tasks_budget.calls_left() == 2
        assert await runtime.budget.calls_left() == 5
        await runtime.client.list_runs(RunFilter())
        assert await runtime.tasks_budget.calls_left() == 1
        assert await runtime.budget.calls_left() == 5
        assert runtime.budgets == {
            HssApi.REGISTRIES: runtime.budget,
            HssApi.TASKS: runtime.tasks_budget,
        }
    finally:
        await runtime.aclose()


# --- logs ------------------------------------------------------------------------------------


async def test_every_call_logs_its_api(
    hss_sim: RunningSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.hss.client")
    hss_sim.sim.queue(503)
    async with client_for(hss_sim) as client:
        await client.list_runs(RunFilter(kind=RunKind.AUTO), limit=10)
        await client.list_page(TaskRef(TEST_PROJECT_ID, "task-1"), ApiFilter())
    lines = [r for r in caplog.records if getattr(r, "event", None) == "hss_call"]
    assert [(r.api, r.status, r.attempt) for r in lines] == [  # type: ignore[attr-defined]
        ("tasks", "503", 1),
        ("tasks", "200", 2),
        ("registries", "200", 1),
    ]
    assert lines[1].getMessage().startswith("HSS GET tasks kind=autoSync offset=0 limit=10 -> 200")
    assert lines[2].getMessage().startswith("HSS GET registries task='task-1' offset=0")
    assert lines[1].path == f"/v5/{TEST_PROJECT_ID}/image/tasks"  # type: ignore[attr-defined]
    assert lines[1].task is None  # type: ignore[attr-defined]


# --- the official SDK reads the simulator's answers as we do ---------------------------------


def sdk_pages(url: str, limit: int, offsets: list[int]) -> list[Any]:
    """ListImageScanTask through the official SDK (signing, HTTP, its own deserialisation)."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkhss.v5 import HssClient as SdkClient
    from huaweicloudsdkhss.v5 import ListImageScanTaskRequest

    credentials = BasicCredentials(TEST_AK, TEST_SK, TEST_PROJECT_ID)
    client = SdkClient.new_builder().with_credentials(credentials).with_endpoints([url]).build()
    return [
        client.list_image_scan_task(
            ListImageScanTaskRequest(type="image_sync", offset=offset, limit=limit)
        )
        for offset in offsets
    ]


#: Every ``SyncRun`` field, each an ``ImageScanTaskInfo`` attribute of the same name.
READ_FIELDS = (
    "task_id",
    "task_name",
    "task_type",
    "begin_time",
    "end_time",
    "task_status",
    "failed_num",
    "success_num",
    "total_num",
    "failed_reason",
)


async def test_the_official_sdk_reads_the_runs_as_we_do(make_hss_sim: MakeSim) -> None:
    clock = SimClock()  # frozen while both read: the same answers
    running = await make_hss_sim(
        clock=clock, run_every=60, run_duration=100, run_history=25, run_registries=40, hostile=True
    )
    running.sim.start_run("manual")
    stopped = running.sim.start_run("manual")
    clock.advance(30)
    running.sim.end_run(stopped.task_id, -3)
    running.sim.registries(stopped.task_id)  # built: its counts now come from its rows
    assert {r.outcome for r in simulated(running)} >= {"finished", "error", "running 30%"}

    responses = await asyncio.to_thread(sdk_pages, running.url, 10, [0, 10, 20])
    async with client_for(running) as client:
        pages = [await client.list_runs(RunFilter(), offset=o, limit=10) for o in (0, 10, 20)]

    assert set(READ_FIELDS) == set(SyncRun.__dataclass_fields__)
    for response, page in zip(responses, pages, strict=True):
        assert response.total_num == page.total_num == 28
        assert len(response.data_list) == len(page.runs) > 0
        for info, run in zip(response.data_list, page.runs, strict=True):
            for name in READ_FIELDS:
                assert getattr(info, name) == getattr(run, name), (name, info, run)
    # The link to ListAssociateRegistries: an SDK task_id is a task the registries API knows.
    task_id = responses[0].data_list[0].task_id
    async with client_for(running) as client:
        registries = await client.fetch_all(TaskRef(TEST_PROJECT_ID, task_id), ApiFilter())
    assert registries.total_num == responses[0].data_list[0].total_num == 40
