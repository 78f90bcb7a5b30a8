"""HssClient against the HSS simulator over real HTTP on loopback.

The simulator checks every signature (a 200 proves signing end to end), enforces the rate
limit and injects faults, so most tests only configure it and count what reached it. A few
response shapes the simulator never produces (nulls, wrong types, echoed secrets) go through
``httpx.MockTransport``. Backoff is shortened to milliseconds; windows are fractions of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import redis.asyncio as aioredis

from bot.config import RateLimit
from bot.errors import (
    CommandError,
    HssAuthError,
    HssError,
    HssNotFoundError,
    HssRequestError,
    HssThrottledError,
    HssUnavailableError,
)
from bot.hss.budget import CallBudget, LocalCallBudget, Priority, RedisCallBudget
from bot.hss.client import FetchResult, HssClient
from bot.hss.signer import Credentials
from bot.mirror import view_key
from bot.models import REGISTRY_TYPES, ApiFilter, Registry, SyncStatus, TaskRef
from bot.sandbox.simdata import Query, parse_query
from bot.sandbox.simulator import Faults, Simulator, parse_raw_query
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, MakeSim, RunningSim
from tests.support import RecordingBudget, RecordingTransport

TOKEN = "TEMPtoken-0123456789-secret-security-token"


def requests_seen(sim: Simulator) -> int:
    """Every request that reached the simulator's API, whatever it answered."""
    return sum(sim.by_status.values())


def ref(task_id: str = "task-1", ep: str | None = None) -> TaskRef:
    return TaskRef(project_id=TEST_PROJECT_ID, task_id=task_id, enterprise_project_id=ep)


@contextlib.asynccontextmanager
async def client_for(running: RunningSim, **kwargs: Any) -> AsyncIterator[HssClient]:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("credentials", running.credentials)
    async with HssClient(endpoint=running.url, project_id=running.project_id, **kwargs) as client:
        yield client


def expected_rows(sim: Simulator, task_id: str, flt: ApiFilter) -> list[Registry]:
    """What HSS holds for ``flt``, in HSS's order (the simulator's own filtering)."""
    spelling = {t.lower(): t for t in REGISTRY_TYPES}
    query = Query(
        limit=1_000_000,
        sync_status=flt.sync_status,
        registry_types=frozenset(spelling[t.lower()] for t in flt.registry_types),
        registry_name=flt.registry_name,
    )
    return sim.task(task_id).query(query)[1]


# --- happy path ---------------------------------------------------------------------------

FILTERS = [
    ApiFilter(),
    ApiFilter(sync_status=SyncStatus.FINISHED),
    ApiFilter(sync_status=SyncStatus.FAILED),
    ApiFilter(registry_types=frozenset({"Harbor", "Jfrog"})),
    ApiFilter(registry_name="prod"),
    ApiFilter(sync_status=SyncStatus.FINISHED, registry_types=frozenset({"SwrPrivate"})),
]


# view_key sorts the registry types: a frozenset's repr follows the hash seed, and xdist's
# workers must all collect the same test ids.
@pytest.mark.parametrize("flt", FILTERS, ids=view_key)
async def test_fetch_all_pages_every_filter(make_hss_sim: MakeSim, flt: ApiFilter) -> None:
    running = await make_hss_sim(task_sizes={"big": 430})
    async with client_for(running) as client:
        result = await client.fetch_all(ref("big"), flt, limit=50)

    expected = expected_rows(running.sim, "big", flt)
    assert list(result.registries) == expected
    assert result.total_num == len(expected)
    pages = max(1, -(-len(expected) // 50))
    assert result.calls == pages == requests_seen(running.sim)
    assert 0 < result.started_at <= result.finished_at


async def test_list_page_returns_one_typed_page(hss_sim: RunningSim) -> None:
    async with client_for(hss_sim) as client:
        page = await client.list_page(ref(), ApiFilter(), offset=100, limit=10)
    assert page.total_num == 120
    assert list(page.registries) == hss_sim.sim.registries("task-1")[100:110]
    assert len(page.request_id) == 32  # the simulator's X-Request-Id


async def test_fetch_all_continues_after_a_given_first_page(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(task_sizes={"big": 250})
    async with client_for(running) as client:
        first = await client.list_page(ref("big"), ApiFilter(), limit=30)
        result = await client.fetch_all(ref("big"), ApiFilter(), limit=100, first=first)
    assert list(result.registries) == running.sim.registries("big")
    assert result.calls == 3  # offsets 30, 130, 230: the given page is not counted
    assert requests_seen(running.sim) == 4


async def test_empty_view_is_one_call(hss_sim: RunningSim) -> None:
    async with client_for(hss_sim) as client:
        result = await client.fetch_all(ref(), ApiFilter(registry_name="no-such-name"))
    assert result == FetchResult((), 0, 1, result.started_at, result.finished_at)


# --- request encoding, as the simulator sees it --------------------------------------------

ODD_TASK_IDS = ["t!*'();:@$,~", "100%done", "任务-ü", "a/b", "plus+and&eq=?#", "x" * 64]


@pytest.mark.parametrize("task_id", ODD_TASK_IDS)
async def test_odd_task_ids_and_every_parameter_are_signed_and_seen(
    make_hss_sim: MakeSim, task_id: str
) -> None:
    # Temporary credentials too: the simulator insists on a signed X-Security-Token.
    running = await make_hss_sim(security_token=TOKEN, task_sizes={task_id: 400})
    flt = ApiFilter(
        sync_status=SyncStatus.FINISHED,
        registry_types=frozenset({"harbor", "SWRPRIVATE", "Jfrog", "Other"}),
        registry_name="prod",
    )
    transport = RecordingTransport()
    async with client_for(running, transport=transport) as client:
        page = await client.list_page(ref(task_id, "all_granted_eps"), flt, offset=10, limit=20)

    assert running.sim.by_status == {200: 1}  # a 401 would mean a signing mismatch
    path, _, raw_query = transport.targets[0].partition("?")
    assert unquote(path.split("/")[6]) == task_id  # how the simulator reads the task id
    assert " " not in raw_query and "+" not in raw_query.replace("%2B", "")
    assert parse_query(parse_raw_query(raw_query)) == Query(
        offset=10,
        limit=20,
        sync_status="finished",
        registry_types=frozenset({"Harbor", "SwrPrivate", "Jfrog", "Other"}),
        registry_name="prod",
        enterprise_project_id="all_granted_eps",
    )
    assert "registry_type=Harbor%2CJfrog%2COther%2CSwrPrivate" in raw_query  # sorted
    # The rows come from the task id the simulator decoded from the path.
    assert list(page.registries) == expected_rows(running.sim, task_id, flt)[10:30]


async def test_optional_parameters_are_left_out(hss_sim: RunningSim) -> None:
    transport = RecordingTransport()
    async with client_for(hss_sim, transport=transport) as client:
        await client.list_page(ref(), ApiFilter())
    assert transport.targets[0].endswith("/tasks/task-1/registries?limit=200&offset=0")


# --- validation: refused before any call ---------------------------------------------------

BAD_INPUTS: list[tuple[str, TaskRef, ApiFilter, dict[str, Any], str]] = [
    ("empty task", ref(""), ApiFilter(), {}, "1-64"),
    ("long task", ref("t" * 65), ApiFilter(), {}, "1-64"),
    ("empty ep", ref("t", ""), ApiFilter(), {}, "1-256"),
    ("long ep", ref("t", "e" * 257), ApiFilter(), {}, "1-256"),
    ("empty name", ref(), ApiFilter(registry_name=""), {}, "1-128"),
    ("long name", ref(), ApiFilter(registry_name="n" * 129), {}, "1-128"),
    ("bad type", ref(), ApiFilter(registry_types=frozenset({"Quay"})), {}, "SwrPrivate"),
    ("bad status", ref(), ApiFilter(sync_status="done"), {}, "finished"),  # type: ignore[arg-type]
    ("negative offset", ref(), ApiFilter(), {"offset": -1}, "0 to 2,000,000"),
    ("huge offset", ref(), ApiFilter(), {"offset": 2_000_001}, "0 to 2,000,000"),
    ("small limit", ref(), ApiFilter(), {"limit": 9}, "10 to 200"),
    ("big limit", ref(), ApiFilter(), {"limit": 201}, "10 to 200"),
    ("other project", TaskRef("p" * 10, "t"), ApiFilter(), {}, "configured"),
    ("long project", TaskRef("p" * 257, "t"), ApiFilter(), {}, "1-256"),
]


@pytest.mark.parametrize(
    ("task", "flt", "kwargs", "accepted"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
async def test_invalid_parameters_make_no_call(
    hss_sim: RunningSim, task: TaskRef, flt: ApiFilter, kwargs: dict[str, Any], accepted: str
) -> None:
    budget = RecordingBudget()
    async with client_for(hss_sim, budget=budget) as client:
        with pytest.raises(CommandError, match=accepted):
            await client.list_page(task, flt, **kwargs)
        if "offset" not in kwargs:
            with pytest.raises(CommandError, match=accepted):
                await client.fetch_all(task, flt, **kwargs)
    assert requests_seen(hss_sim.sim) == 0
    assert budget.acquired == []


# --- errors and retries --------------------------------------------------------------------


async def test_401_is_never_retried(hss_sim: RunningSim, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    budget = RecordingBudget()
    wrong = Credentials(TEST_AK, "SK-wrong-secret-0000000000000000000000000")
    async with client_for(hss_sim, credentials=wrong, budget=budget) as client:
        with pytest.raises(HssAuthError) as info:
            await client.fetch_all(ref(), ApiFilter())
    assert hss_sim.sim.auth_failures == {TEST_AK: 1}
    assert len(budget.acquired) == 1
    err = info.value
    assert (err.status, err.error_code, len(err.request_id)) == (401, "APIGW.0301", 32)
    assert_no_secrets([str(err), repr(err), err.user_message(), caplog.text], wrong)


async def test_403_is_never_retried(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim()
    other = "fedcba9876543210fedcba9876543210"
    async with HssClient(
        endpoint=running.url, project_id=other, credentials=running.credentials
    ) as client:
        with pytest.raises(HssAuthError) as info:
            await client.list_page(TaskRef(other, "task-1"), ApiFilter())
    assert running.sim.by_status == {403: 1}
    assert info.value.error_code == "APIGW.0302"
    assert "permission" in info.value.user_message()


async def test_429_waits_for_retry_after_and_penalizes_the_budget(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(rate_limit=1, window=0.5, retry_after=True)
    budget = RecordingBudget(inner=LocalCallBudget(limit=RateLimit(100, 0.5)))
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(seconds)

    async with client_for(running, budget=budget, sleep=sleep) as client:
        await client.list_page(ref(), ApiFilter())
        page = await client.list_page(ref(), ApiFilter(), offset=10)  # throttled, then served
    assert page.total_num == 120
    assert running.sim.by_status == {200: 2, 429: 1}
    assert sleeps == [1.0]  # the simulator's Retry-After (whole seconds)
    assert budget.penalties == [1.0]
    assert len(budget.acquired) == 3  # the retry took a slot too


async def test_429_until_attempts_run_out(hss_sim: RunningSim) -> None:
    hss_sim.sim.queue(429, 429, 429)
    budget = RecordingBudget()
    async with client_for(hss_sim, budget=budget) as client:
        with pytest.raises(HssThrottledError) as info:
            await client.list_page(ref(), ApiFilter())
    assert hss_sim.sim.by_status == {429: 3}
    assert budget.penalties == [None, None, None]  # no Retry-After: the budget picks the wait
    assert (info.value.retry_after, info.value.error_code) == (None, "APIGW.0308")


async def test_the_pages_and_retries_of_a_fetch_are_one_question(hss_sim: RunningSim) -> None:
    hss_sim.sim.queue("ok", 503)  # the second page's first attempt fails
    budget = RecordingBudget()
    async with client_for(hss_sim, budget=budget) as client:
        result = await client.fetch_all(ref(), ApiFilter(), limit=50)  # 120 rows: 3 pages
    assert result.calls == len(budget.acquired) == 4
    # One ticket for every slot: the budget's queue sees one question, not four.
    assert budget.tickets[0] is not None
    assert all(t is budget.tickets[0] for t in budget.tickets)


async def test_a_429_is_a_wait_not_a_failed_attempt(hss_sim: RunningSim) -> None:
    hss_sim.sim.queue(429, 503, 503)  # then served
    budget = RecordingBudget()
    async with client_for(hss_sim, budget=budget, max_attempts=3) as client:
        page = await client.list_page(ref(), ApiFilter())
    assert page.total_num == 120
    assert hss_sim.sim.by_status == {429: 1, 503: 2, 200: 1}
    assert budget.penalties == [None]  # the 429 still holds the budget back
    assert len(budget.acquired) == 4


async def test_throttles_and_failures_are_bounded_each_on_their_own(hss_sim: RunningSim) -> None:
    hss_sim.sim.queue(429, 503, 429, 503, 429, 503)
    async with client_for(hss_sim, max_attempts=3, max_throttles=3) as client:
        with pytest.raises(HssThrottledError):
            await client.list_page(ref(), ApiFilter())
    # Two failures (of three allowed) and three 429s (of three): a throttled API still ends.
    assert hss_sim.sim.by_status == {429: 3, 503: 2}
    hss_sim.sim.reset()
    hss_sim.sim.queue(503, 429, 503, 429, 503)
    async with client_for(hss_sim, max_attempts=3, max_throttles=3) as client:
        with pytest.raises(HssUnavailableError):
            await client.list_page(ref(), ApiFilter())
    assert hss_sim.sim.by_status == {429: 2, 503: 3}


async def test_429_with_a_long_retry_after_is_not_waited_out(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(rate_limit=1, window=30, retry_after=True)
    async with client_for(running, max_retry_wait=5) as client:
        await client.list_page(ref(), ApiFilter())
        with pytest.raises(HssThrottledError) as info:
            await client.list_page(ref(), ApiFilter())
    assert running.sim.by_status == {200: 1, 429: 1}
    assert info.value.retry_after == 30


async def test_5xx_then_success_is_retried_with_jittered_backoff(hss_sim: RunningSim) -> None:
    hss_sim.sim.queue(503, 502)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with client_for(hss_sim, sleep=sleep, rng=lambda: 0.5, backoff_base=1.0) as client:
        page = await client.list_page(ref(), ApiFilter())
    assert page.total_num == 120
    assert hss_sim.sim.by_status == {503: 1, 502: 1, 200: 1}
    assert sleeps == [0.5, 1.0]  # rng * base * 2**(attempt-1)


async def test_persistent_5xx_gives_unavailable_after_max_attempts(hss_sim: RunningSim) -> None:
    hss_sim.sim.queue(*[500] * 4)
    budget = RecordingBudget()
    async with client_for(hss_sim, budget=budget, max_attempts=4) as client:
        with pytest.raises(HssUnavailableError) as info:
            await client.fetch_all(ref(), ApiFilter(), priority=Priority.BACKGROUND)
    assert hss_sim.sim.by_status == {500: 4}
    assert budget.acquired == [Priority.BACKGROUND] * 4
    assert (info.value.status, info.value.error_code) == (500, "SIM.500")


async def test_timeout_is_retried(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(faults=Faults(timeout_seconds=0.4))
    running.sim.queue("timeout")
    async with client_for(running, timeout=httpx.Timeout(0.1)) as client:
        page = await client.list_page(ref(), ApiFilter())
    assert page.total_num == 120
    assert running.sim.calls[TEST_AK] == 2


@pytest.mark.parametrize(
    "limits",
    [{"timeout": httpx.Timeout(0.1)}, {"attempt_timeout": 0.1}],
    ids=["read-timeout", "attempt-deadline"],
)
async def test_persistent_timeouts_give_unavailable(
    make_hss_sim: MakeSim, limits: dict[str, Any]
) -> None:
    running = await make_hss_sim(faults=Faults(latency_ms=300))
    async with client_for(running, **limits) as client:
        with pytest.raises(HssUnavailableError) as info:
            await client.list_page(ref(), ApiFilter())
    assert running.sim.calls[TEST_AK] == 3
    assert info.value.error_code == "TIMEOUT"
    assert isinstance(info.value.__cause__, httpx.TimeoutException | TimeoutError)


async def test_malformed_json_is_retried_then_unavailable(hss_sim: RunningSim) -> None:
    hss_sim.sim.queue("malformed")
    async with client_for(hss_sim) as client:
        assert (await client.list_page(ref(), ApiFilter())).total_num == 120
        hss_sim.sim.queue(*["malformed"] * 3)
        with pytest.raises(HssUnavailableError) as info:
            await client.list_page(ref(), ApiFilter())
    assert hss_sim.sim.by_status == {200: 5}
    assert info.value.error_code == "MALFORMED_RESPONSE"


async def test_connection_refused_gives_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    creds = Credentials(TEST_AK, TEST_SK)
    async with HssClient(
        endpoint=f"http://127.0.0.1:{port}",
        project_id=TEST_PROJECT_ID,
        credentials=creds,
        backoff_base=0.001,
    ) as client:
        with pytest.raises(HssUnavailableError) as info:
            await client.list_page(ref(), ApiFilter())
    assert info.value.error_code == "NETWORK"
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("status", [400, 404])
async def test_missing_task_is_not_found(make_hss_sim: MakeSim, status: int) -> None:
    running = await make_hss_sim(not_found_status=status)
    async with client_for(running) as client:
        with pytest.raises(HssNotFoundError) as info:
            await client.fetch_all(ref("missing-task"), ApiFilter())
    assert running.sim.by_status == {status: 1}
    assert info.value.error_code == "HSS.0011"


async def test_other_4xx_is_a_request_error_not_retried(hss_sim: RunningSim) -> None:
    hss_sim.sim.queue(400)
    async with client_for(hss_sim) as client:
        with pytest.raises(HssRequestError):
            await client.list_page(ref(), ApiFilter())
    assert hss_sim.sim.by_status == {400: 1}


# --- paging while HSS's data moves ---------------------------------------------------------


async def test_total_change_mid_fetch_restarts_once(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(task_sizes={"big": 300})

    def insert_before_page_two(n: int) -> None:
        if n == 2:
            running.sim.insert("big", 5, at=0)

    budget = RecordingBudget(on_acquire=insert_before_page_two)
    async with client_for(running, budget=budget) as client:
        result = await client.fetch_all(ref("big"), ApiFilter(), limit=100)
    assert list(result.registries) == running.sim.registries("big")
    assert result.total_num == 305
    # Page 2 showed the new total: the pass stops there and a fresh one takes 4 pages.
    assert result.calls == 2 + 4 == requests_seen(running.sim)


async def test_a_stale_first_page_is_not_reused_on_restart(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(task_sizes={"big": 250})
    async with client_for(running) as client:
        first = await client.list_page(ref("big"), ApiFilter(), limit=100)
        running.sim.remove("big", 3, at=0)
        result = await client.fetch_all(ref("big"), ApiFilter(), limit=100, first=first)
    assert list(result.registries) == running.sim.registries("big")
    assert result.total_num == 247
    assert result.calls == 1 + 3  # page 2 showed the change, then a fresh pass


async def test_rows_seen_twice_at_constant_total_restart(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(task_sizes={"big": 300})
    sim = running.sim

    def shift_down_before_page_two(n: int) -> None:
        # One row in front, one gone at the end: page 2 repeats page 1's last row.
        if n == 2:
            sim.insert("big", 1, at=0)
            sim.remove("big", 1, at=300)

    budget = RecordingBudget(on_acquire=shift_down_before_page_two)
    async with client_for(running, budget=budget) as client:
        result = await client.fetch_all(ref("big"), ApiFilter(), limit=100)
    assert len(sim.task("big")) == 300
    assert list(result.registries) == sim.registries("big")
    assert result.calls == 3 + 3


async def test_data_moving_on_every_page_raises_instead_of_a_partial_result(
    make_hss_sim: MakeSim,
) -> None:
    running = await make_hss_sim(task_sizes={"big": 300})

    def flip_before_every_page(n: int) -> None:
        running.sim.flip("big", 40)

    budget = RecordingBudget(on_acquire=flip_before_every_page)
    async with client_for(running, budget=budget) as client:
        with pytest.raises(HssUnavailableError) as info:
            await client.fetch_all(ref("big"), ApiFilter(sync_status=SyncStatus.FINISHED), limit=50)
    assert info.value.error_code == "INCONSISTENT_PAGES"
    assert requests_seen(running.sim) == len(budget.acquired) <= 2 * 8


# --- the budget keeps us under HSS's limit -------------------------------------------------


async def fetch_under_budget(running: RunningSim, budget: CallBudget) -> FetchResult:
    async with client_for(running, budget=budget) as client:
        return await client.fetch_all(ref("big"), ApiFilter(), limit=100)


LIMIT = RateLimit(3, 0.3)
#: The budget counts a call when it grants the slot, the gateway when the request arrives;
#: the first request also pays for the TCP connect, so arrivals can bunch up by a millisecond
#: or two. With identical windows that yields an occasional 429 (measured: about one run in
#: two), so the budget here keeps a margin the production budget should keep as well.
BUDGET_LIMIT = RateLimit(LIMIT.calls, LIMIT.window + 0.03)


async def assert_no_429_over_many_pages(make_hss_sim: MakeSim, budget: CallBudget) -> None:
    running = await make_hss_sim(
        task_sizes={"big": 1000}, rate_limit=LIMIT.calls, window=LIMIT.window
    )
    async with client_for(running, budget=budget) as client:
        result = await client.fetch_all(ref("big"), ApiFilter(), limit=100)
    assert len(result.registries) == 1000
    assert running.sim.throttled == 0
    assert running.sim.by_status == {200: 10}
    assert result.finished_at - result.started_at >= 2 * LIMIT.window  # it really waited


async def test_redis_budget_prevents_429(make_hss_sim: MakeSim, redis: aioredis.Redis) -> None:
    budget = RedisCallBudget(redis, scope="hss-client-test", limit=BUDGET_LIMIT)
    await assert_no_429_over_many_pages(make_hss_sim, budget)


async def test_local_budget_prevents_429(make_hss_sim: MakeSim) -> None:
    await assert_no_429_over_many_pages(make_hss_sim, LocalCallBudget(limit=BUDGET_LIMIT))


# --- secrets and response shapes the simulator never sends ---------------------------------


def assert_no_secrets(texts: list[str], creds: Credentials) -> None:
    for text in texts:
        for secret in (creds.ak, creds.sk, creds.security_token, "Signature=", "Authorization"):
            assert not secret or secret not in text, f"{secret[:4]}... leaked"


async def test_secrets_stay_out_of_errors_and_logs(
    make_hss_sim: MakeSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = await make_hss_sim(security_token=TOKEN)
    running.sim.queue(503, 429, "ok", 500, "malformed", 500)
    errors: list[HssError] = []
    async with client_for(running) as client:
        await client.list_page(ref(), ApiFilter())
        with pytest.raises(HssUnavailableError) as info:
            await client.list_page(ref(), ApiFilter())
        errors.append(info.value)
    texts = [caplog.text] + [t for e in errors for t in (str(e), repr(e), e.user_message())]
    assert_no_secrets(texts, running.credentials)
    assert caplog.text.count("HSS GET registries") == 6  # one line per call


def mock_client(
    body: object, *, status: int = 200, headers: dict[str, str] | None = None
) -> HssClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return HssClient(
        endpoint="https://hss.example.test",
        project_id=TEST_PROJECT_ID,
        credentials=Credentials(TEST_AK, TEST_SK, TOKEN),
        transport=httpx.MockTransport(answer),
        max_attempts=1,
    )


async def test_error_text_echoing_a_secret_is_scrubbed() -> None:
    body = {"error_code": "APIGW.0301", "error_msg": f"bad AK {TEST_AK} token {TOKEN}"}
    async with mock_client(body, status=401) as client:
        with pytest.raises(HssAuthError) as info:
            await client.list_page(ref(), ApiFilter())
    assert_no_secrets([str(info.value)], Credentials(TEST_AK, TEST_SK, TOKEN))
    assert "bad AK ******** token ********" in str(info.value)


@pytest.mark.parametrize(
    ("body", "total", "rows"),
    [
        ({"total_num": 2, "data_list": [{"registry_id": "a"}, {"registry_id": 7}]}, 2, ["a", "7"]),
        ({"total_num": "3", "data_list": None}, 3, []),
        ({"total_num": 1.0, "data_list": [{"registry_id": "a", "sync_status": None}]}, 1, ["a"]),
        ({"data_list": [{"registry_id": "a"}]}, 1, ["a"]),  # short page: it is the end
        ({}, 0, []),
    ],
)
async def test_missing_and_odd_fields_are_tolerated(
    body: dict[str, Any], total: int, rows: list[str]
) -> None:
    async with mock_client(body, headers={"X-Request-Id": "rid-1"}) as client:
        page = await client.list_page(ref(), ApiFilter(), limit=10)
    assert page.total_num == total
    assert [r.registry_id for r in page.registries] == rows
    assert all(r.sync_status == "" for r in page.registries)
    assert page.request_id == "rid-1"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"total_num": 5, "data_list": {"registry_id": "a"}},
        {"total_num": 5, "data_list": ["a"]},
        {"data_list": [{"registry_id": str(i)} for i in range(10)]},  # full page, no total
    ],
)
async def test_unusable_bodies_are_malformed(body: object) -> None:
    async with mock_client(body) as client:
        with pytest.raises(HssUnavailableError, match="MALFORMED_RESPONSE"):
            await client.list_page(ref(), ApiFilter(), limit=10)


async def test_request_id_from_body_and_retry_after_as_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    body = {"error_code": "APIGW.0308", "error_msg": "slow down", "request_id": "body-rid"}
    async with mock_client(body, status=429, headers={"Retry-After": when}) as client:
        with pytest.raises(HssThrottledError) as info:
            await client.list_page(ref(), ApiFilter())
    assert info.value.request_id == "body-rid"
    assert info.value.retry_after is not None and 110 < info.value.retry_after <= 120


async def test_redirect_is_a_request_error() -> None:
    async with mock_client("moved", status=302, headers={"Location": "https://e.test"}) as client:
        with pytest.raises(HssRequestError, match="HTTP 302"):
            await client.list_page(ref(), ApiFilter())
