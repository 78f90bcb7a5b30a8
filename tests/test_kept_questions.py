"""A lookup that gives up in a way another try may mend keeps the question: the message says
so and has Retry now, background tries (bounded in number and time) replace it when the
answer comes, and Retry now tries at once without spending calls faster than asking again.
Signed requests over HTTP, the simulator's faults, a real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.kept_questions import RetryPlan
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import SimConfig
from bot.sandbox.slack_requests import Reply, button
from bot.slack.app import MAX_WAIT
from bot.slack.followups import RESTARTING
from bot.slack.render import ACTION_REFRESH, ACTION_RETRY
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK
from tests.support import until

TASK = "task-kept"
#: Quick background tries, so that tests need not wait minutes.
QUICK = RetryPlan(delays=(0.2, 0.2, 0.2), lifetime=60.0, min_gap=1.0)
#: A background try that would come only after the test.
LATER = RetryPlan(delays=(600.0,), lifetime=1200.0, min_gap=1.0)
MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[MakeStack]:
    async with AsyncExitStack() as exits:

        async def make(
            plan: RetryPlan,
            env: dict[str, str] | None = None,
            max_wait: float = MAX_WAIT,
            **sim: Any,
        ) -> Stack:
            fields: dict[str, Any] = {"rate_limit": 1000, "task_sizes": {TASK: 57}, **sim}
            config = SimConfig(ak=TEST_AK, sk=TEST_SK, project_id=TEST_PROJECT_ID, **fields)
            return await exits.enter_async_context(
                local_stack(
                    sim_config=config,
                    env={"HSS_RATE_LIMIT": "1000/60s", **(env or {})},
                    redis_url=redis_url,
                    retry_plan=plan,
                    max_wait=max_wait,
                )
            )

        yield make


def calls(stack: Stack) -> int:
    return sum(stack.sim.calls.values())


def text_of(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


async def posts(
    stack: Stack, reply: Reply, count: int, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """The first ``count`` response_url posts made for ``reply``, once made."""
    await stack.standin.wait_for(
        lambda cs: len([c for c in cs if c.name == reply.response_id]) >= count, timeout
    )
    return [c.body for c in stack.standin.responses(reply.response_id)]


def has_retry_button(message: dict[str, Any]) -> bool:
    try:
        button(message, ACTION_RETRY)
    except LookupError:
        return False
    return True


async def settled(stack: Stack) -> None:
    assert stack.slack is not None
    await until(lambda: len(stack.slack.followups.kept) == 0, what="no question kept")  # type: ignore[union-attr]
    await stack.slack.background.settled()


async def test_a_lookup_that_gives_up_is_kept_and_answered_by_a_background_try(
    make_stack: MakeStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.lookup")
    stack = await make_stack(QUICK)
    stack.sim.queue(503, 503, 503)  # every attempt of the first fetch
    reply = await stack.user.command_text(f"{TASK} failed")
    kept, fresh = await posts(stack, reply, 2)
    assert "not answering properly" in text_of(kept)
    assert "I kept the question and will try up to 3 more times in the background" in text_of(kept)
    assert has_retry_button(kept)
    assert kept["replace_original"] is True and fresh["replace_original"] is True
    failed = {r.registry_name for r in stack.sim.registries(TASK) if r.sync_status == "failed"}
    assert failed and all(name in text_of(fresh) for name in failed)
    assert not has_retry_button(fresh)
    await settled(stack)
    assert calls(stack) == 4  # three failed attempts, then one try that worked
    assert [r.outcome for r in caplog.records if getattr(r, "event", "") == "lookup"] == [
        "failed",
        "refreshed",
    ]


async def test_background_tries_are_bounded_and_the_last_one_says_so(make_stack: MakeStack) -> None:
    stack = await make_stack(QUICK)
    stack.sim.queue(*[503] * 12)  # the first fetch and each of the three tries: 3 attempts each
    reply = await stack.user.command_text(f"{TASK} failed")
    _, final = await posts(stack, reply, 2)
    assert "No further tries in the background" in text_of(final)
    assert "not answering properly" in text_of(final)
    assert has_retry_button(final)
    await settled(stack)
    assert calls(stack) == 12
    assert len(stack.standin.responses(reply.response_id)) == 2  # of response_url's 5 uses


async def test_retry_now_tries_at_once_and_replaces_the_message(make_stack: MakeStack) -> None:
    stack = await make_stack(LATER)
    stack.sim.queue(503, 503, 503)
    reply = await stack.user.command_text(f"{TASK} failed")
    [kept] = await posts(stack, reply, 1)
    assert "next at about" in text_of(kept)
    click = await stack.user.click(button(kept, ACTION_RETRY))
    assert click.status == 200 and click.elapsed < 3.0
    trying, fresh = await posts(stack, click, 2)
    assert "Trying again now" in text_of(trying)
    assert "data from" in text_of(fresh) and not has_retry_button(fresh)
    await settled(stack)
    assert calls(stack) == 4
    # The background try planned for later is not made: the question was answered.
    assert len(stack.standin.responses(reply.response_id)) == 1


async def test_retry_now_clicks_coalesce_into_one_try(make_stack: MakeStack) -> None:
    stack = await make_stack(LATER)
    stack.sim.queue(503, 503, 503)
    reply = await stack.user.command_text(f"{TASK} failed")
    [kept] = await posts(stack, reply, 1)
    stack.sim.set_faults(latency_ms=1000.0)  # the try is still running when the others click
    retry = button(kept, ACTION_RETRY)
    first = await stack.user.click(retry)
    await posts(stack, first, 1)
    others = await asyncio.gather(*(stack.user.click(retry) for _ in range(5)))
    said = [text_of((await posts(stack, c, 1))[0]) for c in others]
    assert all("Already trying again" in s for s in said)
    await settled(stack)
    assert calls(stack) == 4


async def test_retry_now_is_not_faster_than_the_budget_allows(make_stack: MakeStack) -> None:
    stack = await make_stack(RetryPlan(delays=(600.0,), lifetime=1200.0, min_gap=30.0))
    stack.sim.queue(*[503] * 6)
    reply = await stack.user.command_text(f"{TASK} failed")
    [kept] = await posts(stack, reply, 1)
    retry = button(kept, ACTION_RETRY)
    first = await stack.user.click(retry)
    trying, failed_again = await posts(stack, first, 2)
    assert "Trying again now" in text_of(trying)
    assert "No further tries in the background" in text_of(failed_again)
    assert calls(stack) == 6
    again = await stack.user.click(retry)
    [too_soon] = await posts(stack, again, 1)
    assert "Retry now works again in" in text_of(too_soon)
    assert calls(stack) == 6  # no call for a click that came too soon


async def test_a_refresh_that_answers_a_kept_message_ends_its_background_tries(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(LATER)
    stack.sim.queue(503, 503, 503)
    reply = await stack.user.command_text(f"{TASK} failed")
    [kept] = await posts(stack, reply, 1)
    assert stack.slack is not None and len(stack.slack.followups.kept) == 1
    click = await stack.user.click(button(kept, ACTION_REFRESH))
    [fresh] = await posts(stack, click, 1)
    assert "data from" in text_of(fresh) and not has_retry_button(fresh)
    await settled(stack)  # the kept question stopped: nobody waits for it
    assert calls(stack) == 4
    assert stack.slack.followups.waiting == 0


async def test_a_question_given_up_for_the_budget_is_kept_too(make_stack: MakeStack) -> None:
    env = {"HSS_RATE_LIMIT": "1/30s"}
    stack = await make_stack(LATER, env=env, max_wait=0.5, rate_limit=1, window=30.0)
    assert stack.slack is not None
    await posts(stack, await stack.user.command_text(f"{TASK} failed"), 1)
    reply = await stack.user.command_text("other-task failed")
    [kept] = await posts(stack, reply, 1)
    assert "Fresh data did not come within 25 minutes" in text_of(kept)
    assert "I kept the question" in text_of(kept) and has_retry_button(kept)
    assert len(stack.slack.followups.kept) == 1


async def test_shutdown_tells_people_whose_question_is_kept(make_stack: MakeStack) -> None:
    stack = await make_stack(LATER)
    stack.sim.queue(503, 503, 503)
    reply = await stack.user.command_text(f"{TASK} failed")
    await posts(stack, reply, 1)
    assert stack.slack is not None
    assert await stack.slack.tell_restarting(timeout=5.0) == 1
    _, told = await posts(stack, reply, 2)
    assert RESTARTING in text_of(told) and told["replace_original"] is True
    assert len(stack.slack.followups.kept) == 0


def test_the_plan_fits_in_response_urls_lifetime() -> None:
    plan = RetryPlan()
    assert plan.tries_left(0, age=0.0) == 5
    assert plan.delay(0, age=0.0) == 30.0
    assert plan.delay(5, age=0.0) is None
    # A question given up after the 25-minute wait has room for one or two tries at most.
    assert plan.tries_left(0, age=25 * 60.0) == 2
    assert plan.delay(2, age=25 * 60.0 + 90.0) is None
    assert sum(plan.delays) < plan.lifetime < 30 * 60.0


async def test_a_lookup_asked_after_people_were_told_of_the_restart_is_told_too(
    make_stack: MakeStack,
) -> None:
    # In HTTP mode Slack's requests come in until the listener closes, after the notices:
    # such a question would start a fetch the shutdown cuts short, its message promising
    # fresh data for ever. It is told at once instead, without a call.
    stack = await make_stack(LATER)
    assert stack.slack is not None
    assert await stack.slack.tell_restarting(timeout=5.0) == 0
    reply = await stack.user.command_text(f"{TASK} failed")
    assert "Fetching fresh data" in text_of(reply.body)
    [told] = await posts(stack, reply, 1)
    assert RESTARTING in text_of(told) and told["replace_original"] is True
    await stack.slack.background.settled()
    assert calls(stack) == 0
    assert stack.slack.followups.waiting == 0
