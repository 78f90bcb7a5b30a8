"""The one lookup flow (``LookupService.ask`` then ``follow_up``), which Slack and the CLI
both use: each question is logged and counted once, with the outcome of its last answer.

On real parts: the simulator over HTTP and the test Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.config import Settings
from bot.errors import HssAuthError
from bot.models import LookupRequest, SyncStatus
from bot.ops import metrics
from bot.runtime import Runtime, open_runtime
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, MakeSim, RunningSim

MakeRuntime = Callable[..., Awaitable[Runtime]]
FAILED = LookupRequest("t", SyncStatus.FAILED)


@pytest.fixture
async def make_runtime(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[MakeRuntime]:
    async with AsyncExitStack() as exits:

        async def make(sim: RunningSim, **env: str) -> Runtime:
            base = {
                "CLOUD_SDK_AK": TEST_AK,
                "CLOUD_SDK_SK": TEST_SK,
                "HSS_PROJECT_ID": TEST_PROJECT_ID,
                "HSS_ENDPOINT": sim.url,
                "REDIS_URL": redis_url,
                "HSS_RATE_LIMIT": "1000/60s",
            }
            settings = Settings.for_command({**base, **env}, hss=True, slack=False)
            runtime = await open_runtime(settings)
            exits.push_async_callback(runtime.aclose)
            return runtime

        yield make


class Lookups:
    """The ``lookup`` log lines and counts since this was made."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="bot.lookup")
        self._caplog = caplog
        self._seen = len(caplog.records)
        self._counts = {o: self._count(o) for o in metrics.LOOKUP_OUTCOMES}

    @staticmethod
    def _count(outcome: str) -> float:
        value = metrics.REGISTRY.get_sample_value("hss_sync_lookups_total", {"outcome": outcome})
        return value or 0.0

    def lines(self) -> list[dict[str, Any]]:
        records = self._caplog.records[self._seen :]
        return [vars(r) for r in records if getattr(r, "event", None) == "lookup"]

    def counted(self) -> dict[str, float]:
        counts = {o: self._count(o) - before for o, before in self._counts.items()}
        return {o: n for o, n in counts.items() if n}


async def test_a_cold_question_is_recorded_once_when_followed_up(
    hss_sim: RunningSim, make_runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    lookups = (await make_runtime(hss_sim)).lookups
    seen = Lookups(caplog)

    question = await lookups.ask(FAILED)
    assert not question.peek.fresh and not question.peek.answer.has_data
    assert seen.lines() == []  # not answered yet: nothing to record

    answer = await lookups.follow_up(question)
    assert answer.has_data
    [line] = seen.lines()
    assert (line["outcome"], line["task"], line["status_filter"]) == ("refreshed", "t", "failed")
    assert line["error"] is None and line["age_s"] is not None and line["ms"] >= 0
    assert seen.counted() == {"refreshed": 1}


async def test_a_fresh_question_is_recorded_when_asked(
    hss_sim: RunningSim, make_runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    lookups = (await make_runtime(hss_sim)).lookups
    await lookups.lookup(FAILED)
    seen = Lookups(caplog)

    asked = time.monotonic() - 5.0  # say, before the CLI opened its connections
    question = await lookups.ask(FAILED, started=asked)

    assert question.peek.fresh and question.started == asked
    [line] = seen.lines()
    assert line["outcome"] == "fresh"
    assert line["ms"] >= 5000  # counted from when the person asked
    assert seen.counted() == {"fresh": 1}


async def test_a_failed_refresh_is_recorded_with_its_error_and_raised(
    hss_sim: RunningSim, make_runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    lookups = (await make_runtime(hss_sim, CLOUD_SDK_SK="wrong-secret-key")).lookups
    seen = Lookups(caplog)

    question = await lookups.ask(FAILED)
    with pytest.raises(HssAuthError):
        await lookups.follow_up(question)

    [line] = seen.lines()
    assert (line["outcome"], line["error"]) == ("failed", "APIGW.0301")
    assert line["age_s"] is None  # the older answer shown had no data
    assert seen.counted() == {"failed": 1}


async def test_no_fresh_data_within_max_wait_is_recorded_as_given_up(
    make_hss_sim: MakeSim, make_runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await make_hss_sim(rate_limit=1, window=60.0)
    lookups = (await make_runtime(sim, HSS_RATE_LIMIT="1/60s")).lookups
    await lookups.lookup(FAILED)  # spends the minute's one call
    seen = Lookups(caplog)

    question = await lookups.ask(LookupRequest("other"))
    with pytest.raises(TimeoutError):
        await lookups.follow_up(question, max_wait=0.2)

    [line] = seen.lines()
    assert (line["outcome"], line["task"]) == ("gave_up", "other")
    assert seen.counted() == {"gave_up": 1}


async def test_lookup_is_ask_then_follow_up(
    hss_sim: RunningSim, make_runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    lookups = (await make_runtime(hss_sim)).lookups
    seen = Lookups(caplog)

    await lookups.lookup(FAILED)
    await lookups.lookup(FAILED)

    assert [line["outcome"] for line in seen.lines()] == ["refreshed", "fresh"]
    assert seen.counted() == {"refreshed": 1, "fresh": 1}
