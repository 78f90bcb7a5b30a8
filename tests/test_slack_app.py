"""End to end: signed Slack requests into the bot over HTTP, the HSS simulator over HTTP, a
real Redis, and the Slack stand-in recording every response_url post."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from bot.models import LookupRequest, SyncStatus
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import Faults, SimConfig
from bot.sandbox.slack_requests import Reply, button
from bot.slack.app import GAVE_UP, MAX_WAIT
from bot.slack.render import ACTION_PAGE_NEXT, ACTION_REFRESH, ACTION_SHARE
from bot.storage import keys
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK
from tests.support import until

TASK = "task-e2e"
MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[MakeStack]:
    """``await make_stack(env={...}, **SimConfig fields)``: a running bot on the test Redis."""
    async with AsyncExitStack() as exits:

        async def make(
            *,
            env: dict[str, str] | None = None,
            url: str | None = None,
            max_wait: float = MAX_WAIT,
            **sim: Any,
        ) -> Stack:
            config: dict[str, Any] = {
                "ak": TEST_AK,
                "sk": TEST_SK,
                "project_id": TEST_PROJECT_ID,
                "rate_limit": 1000,
                "window": 60.0,
                "task_sizes": {TASK: 57},
            }
            config.update(sim)
            return await exits.enter_async_context(
                local_stack(
                    sim_config=SimConfig(**config),
                    env=env,
                    redis_url=url or redis_url,
                    max_wait=max_wait,
                )
            )

        yield make


def calls(stack: Stack) -> int:
    return sum(stack.sim.calls.values())


async def followup(
    stack: Stack, reply: Reply, index: int = 0, timeout: float = 10.0
) -> dict[str, Any]:
    """The ``index``-th response_url post made for ``reply``."""
    got = await stack.standin.wait_for(
        lambda cs: (
            len([c for c in cs if c.kind == "response" and c.name == reply.response_id]) > index
        ),
        timeout=timeout,
    )
    return [c.body for c in got if c.kind == "response" and c.name == reply.response_id][index]


def outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The outcome of each ``lookup`` line logged (one per question asked)."""
    return [r.outcome for r in caplog.records if getattr(r, "event", None) == "lookup"]


def text_of(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False)


def failed_names(stack: Stack, task: str = TASK) -> set[str]:
    return {r.registry_name for r in stack.sim.registries(task) if r.sync_status == "failed"}


async def test_cold_lookup_acks_at_once_then_replaces_with_fresh_answer(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    reply = await stack.user.command_text(f"{TASK} failed")
    assert reply.status == 200
    assert reply.elapsed < 3.0
    assert reply.body["response_type"] == "ephemeral"
    assert "Fetching fresh data" in text_of(reply.body)
    fresh = await followup(stack, reply)
    assert fresh["replace_original"] is True
    assert fresh["response_type"] == "ephemeral"
    names = failed_names(stack)
    assert names, "seed 0 gives the 57-registry task some failures"
    assert all(name in text_of(fresh) for name in names)
    assert calls(stack) == 1


async def test_mirror_answers_other_filters_in_the_ack_without_calls(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await followup(stack, await stack.user.command_text(f"{TASK} failed"))
    regs = stack.sim.registries(TASK)
    for text, expected in [
        (f"{TASK} running", {r.registry_name for r in regs if r.sync_status == "running"}),
        (
            f"{TASK} failed type=harbor",
            {
                r.registry_name
                for r in regs
                if r.sync_status == "failed" and r.registry_type == "Harbor"
            },
        ),
        (f"{TASK} failed", failed_names(stack)),
    ]:
        reply = await stack.user.command_text(text)
        body = text_of(reply.body)
        assert "Fetching" not in body
        assert all(name in body for name in expected), text
        others = {r.registry_name for r in regs} - expected
        assert not any(f"`{name}`" in body for name in others), text
    assert calls(stack) == 1


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("x" * 65, "at most 64"),
        (f"{TASK} broken", "finished, running, failed"),
        (f"{TASK} type=Quay", "Harbor"),
        (f"{TASK} name=", "name="),
        (f"{TASK} foo=1", "Unknown option"),
        (f"{TASK} failed failed", "status"),
    ],
)
async def test_bad_input_gets_an_ephemeral_reason_and_no_call(
    make_stack: MakeStack, text: str, says: str
) -> None:
    stack = await make_stack()
    reply = await stack.user.command_text(text)
    assert reply.status == 200
    assert reply.body["response_type"] == "ephemeral"
    assert says in text_of(reply.body)
    await asyncio.sleep(0.2)
    assert calls(stack) == 0
    assert stack.standin.calls == [] or all(c.name == "auth.test" for c in stack.standin.calls)


@pytest.mark.parametrize("text", ["watch t1", "watches", "mute t1 1h", "unwatch t1", "unmute t1"])
async def test_watch_commands_say_they_are_not_available_yet(
    make_stack: MakeStack, text: str
) -> None:
    stack = await make_stack()
    reply = await stack.user.command_text(text)
    assert reply.body["response_type"] == "ephemeral"
    assert "not available in this version yet" in text_of(reply.body)
    assert calls(stack) == 0


async def test_help_lists_the_grammar(make_stack: MakeStack) -> None:
    stack = await make_stack()
    reply = await stack.user.command_text("help")
    assert "failed" in text_of(reply.body) and "type=" in text_of(reply.body)
    assert calls(stack) == 0


async def test_paging_replaces_the_message_in_place_without_calls(make_stack: MakeStack) -> None:
    stack = await make_stack()
    first = await followup(stack, await stack.user.command_text(TASK))
    assert "page 1 of 3" in text_of(first)
    click = await stack.user.click(button(first, ACTION_PAGE_NEXT))
    second = await followup(stack, click)
    assert second["replace_original"] is True
    assert "page 2 of 3" in text_of(second)
    assert calls(stack) == 1


async def test_refresh_clicks_by_many_people_cost_one_call(
    make_stack: MakeStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.lookup")
    stack = await make_stack(env={"HSS_FRESH_SECONDS": "0.3"})
    first = await followup(stack, await stack.user.command_text(f"{TASK} failed"))
    await asyncio.sleep(0.4)
    refresh = button(first, ACTION_REFRESH)
    clicks = await asyncio.gather(*(stack.user.click(refresh) for _ in range(5)))
    answers = await asyncio.gather(*(followup(stack, c) for c in clicks))
    assert all("data from" in text_of(a) for a in answers)
    assert calls(stack) == 2
    assert outcomes(caplog) == ["refreshed"] * 6  # the command, then each click


async def test_share_posts_to_the_channel(make_stack: MakeStack) -> None:
    stack = await make_stack()
    first = await followup(stack, await stack.user.command_text(f"{TASK} failed"))
    shared = await followup(stack, await stack.user.click(button(first, ACTION_SHARE)))
    assert shared["response_type"] == "in_channel"
    assert shared["replace_original"] is False
    assert stack.user.user_id in text_of(shared)
    assert ACTION_SHARE not in text_of(shared)


async def test_spent_budget_says_when_fresh_data_comes_then_delivers(make_stack: MakeStack) -> None:
    stack = await make_stack(env={"HSS_RATE_LIMIT": "1/3s"}, rate_limit=1, window=3.0)
    await followup(stack, await stack.user.command_text(f"{TASK} failed"))
    reply = await stack.user.command_text("other-task failed")
    assert reply.elapsed < 3.0
    assert "budget is spent" in text_of(reply.body)
    fresh = await followup(stack, reply, timeout=10.0)
    assert "data from" in text_of(fresh)
    assert calls(stack) == 2
    assert stack.sim.throttled == 0


async def test_identical_cold_lookups_coalesce_into_one_call(make_stack: MakeStack) -> None:
    stack = await make_stack(faults=Faults(latency_ms=300.0))
    replies = await asyncio.gather(*(stack.user.command_text(f"{TASK} failed") for _ in range(8)))
    await asyncio.gather(*(followup(stack, r) for r in replies))
    assert calls(stack) == 1


async def test_wrong_credentials_stop_calls_until_an_operator_resets(make_stack: MakeStack) -> None:
    stack = await make_stack(env={"CLOUD_SDK_SK": "wrong-secret-key"})
    answer = text_of(await followup(stack, await stack.user.command_text(f"{TASK} failed")))
    assert "APIGW.0301" in answer
    assert "Request id" in answer
    assert "wrong-secret-key" not in answer
    again = text_of(await followup(stack, await stack.user.command_text(f"{TASK} failed")))
    assert "APIGW.0301" in again
    assert sum(stack.sim.auth_failures.values()) == 1
    assert await stack.runtime.lookups.reset_auth() is True


async def test_hostile_registry_names_and_reasons_are_inert(make_stack: MakeStack) -> None:
    stack = await make_stack(hostile=True, task_sizes={TASK: 200})
    fresh = await followup(stack, await stack.user.command_text(TASK))
    raw = text_of(fresh)
    assert "<!channel>" not in raw and "<!here>" not in raw
    assert "<https://" not in raw and "<http://" not in raw


async def test_unsigned_or_badly_signed_requests_are_refused(make_stack: MakeStack) -> None:
    stack = await make_stack()
    async with httpx.AsyncClient() as http:
        events = stack.user._events
        response = await http.post(
            events,
            content="command=%2Fhss-sync&text=x",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": "1",
                "X-Slack-Signature": "v0=bad",
            },
        )
    assert response.status_code == 401
    assert calls(stack) == 0


async def test_slow_hss_never_delays_the_ack(make_stack: MakeStack) -> None:
    stack = await make_stack()
    stack.sim.set_faults(latency_ms=1500.0)
    reply = await stack.user.command_text(f"{TASK} failed")
    assert reply.elapsed < 1.0
    fresh = await followup(stack, reply, timeout=10.0)
    assert "data from" in text_of(fresh)


async def test_hss_outage_shows_the_error_with_older_data(
    make_stack: MakeStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.lookup")
    stack = await make_stack(env={"HSS_FRESH_SECONDS": "0.2"})
    await followup(stack, await stack.user.command_text(f"{TASK} failed"))
    await asyncio.sleep(0.3)
    stack.sim.queue(503, 503, 503)
    reply = await stack.user.command_text(f"{TASK} failed")
    assert "data from" in text_of(reply.body)
    answer = text_of(await followup(stack, reply, timeout=15.0))
    assert "not answering properly" in answer
    assert all(name in answer for name in failed_names(stack))
    assert outcomes(caplog) == ["refreshed", "failed"]


async def test_redis_outage_still_answers_with_one_warning(
    make_stack: MakeStack, redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await make_stack(url=redis_server.url)
    await followup(stack, await stack.user.command_text(f"{TASK} failed"))
    await asyncio.to_thread(redis_server.stop)
    caplog.set_level(logging.WARNING)
    await asyncio.sleep(0.3)  # past the moment a peek may reuse what it just read
    for _ in range(2):  # what this process knew before the outage still answers
        reply = await stack.user.command_text(f"{TASK} running")
        assert reply.status == 200
        assert "data from" in text_of(reply.body)
    cold = await stack.user.command_text("another-task failed")
    assert "Fetching" in text_of(cold.body)
    assert "data from" in text_of(await followup(stack, cold, timeout=15.0))
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "Redis" in r.getMessage()
    ]
    assert len(warnings) == 1  # mirror and budget share one outage notice
    await asyncio.to_thread(redis_server.start)


async def test_an_answer_that_cannot_come_in_time_says_so(
    make_stack: MakeStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.lookup")
    stack = await make_stack(env={"HSS_RATE_LIMIT": "1/30s"}, max_wait=0.5)
    await followup(stack, await stack.user.command_text(f"{TASK} failed"))
    reply = await stack.user.command_text("other-task failed")
    assert "budget is spent" in text_of(reply.body)
    answer = await followup(stack, reply, timeout=5.0)
    assert GAVE_UP.split(":")[0] in text_of(answer)
    assert calls(stack) == 1
    assert outcomes(caplog) == ["refreshed", "gave_up"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("{", "application/json"), ("\xff\xfe", "application/x-www-form-urlencoded")],
)
async def test_a_body_that_is_not_slacks_is_a_400_not_an_error(
    make_stack: MakeStack, caplog: pytest.LogCaptureFixture, body: str, content_type: str
) -> None:
    stack = await make_stack()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            stack.user._events,
            content=body.encode("latin-1"),
            headers={"Content-Type": content_type},
        )

    assert response.status_code in (400, 401)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_follow_up_that_fails_unexpectedly_still_replaces_its_message(
    make_stack: MakeStack, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # Not an error the bot explains (a BotError), nor a give-up: Redis refusing the save
    # (here WRONGTYPE; in production e.g. OOM). The person is told, not left looking at
    # "Fetching fresh data…", and the message stops waiting; the lookup is counted, failed.
    caplog.set_level(logging.INFO, logger="bot.lookup")
    stack = await make_stack()
    assert stack.slack is not None
    stack.sim.set_faults(latency_ms=500.0)
    reply = await stack.user.command_text("broken-task failed")
    assert "Fetching" in text_of(reply.body)
    await until(lambda: calls(stack) >= 1, what="the call made")
    ref = stack.runtime.lookups.ref(LookupRequest("broken-task", SyncStatus.FAILED))
    await redis.set(keys.mirror(ref), "not a hash")  # the save after the call fails
    answer = text_of(await followup(stack, reply, timeout=10.0))
    assert "Something went wrong" in answer and "Fetching" not in answer
    await stack.slack.background.settled()
    assert stack.slack.followups.waiting == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert outcomes(caplog) == ["failed"]
