"""One user cannot starve everyone, end to end: signed slash commands from two people into the
bot over HTTP, the HSS simulator over HTTP (it answers ``HSS.0011`` for ids starting with
``missing-``), a real Redis, and the Slack stand-in recording every response_url post in the
order the bot made them."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bot.hss.budget import MAX_QUEUED_PER_ASKER
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import SimConfig
from bot.sandbox.slack_requests import Reply, SlackUser
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK

TASK = "task-colleague"
JUNK = [f"missing-{i}x7Qz" for i in range(8)]  # valid ids HSS does not know


@pytest.fixture
async def stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[Stack]:
    config = SimConfig(
        ak=TEST_AK, sk=TEST_SK, project_id=TEST_PROJECT_ID, rate_limit=1000, task_sizes={TASK: 30}
    )
    # One call a second (1.05 s padded): the first question goes at once, the rest queue.
    env = {"HSS_RATE_LIMIT": "1/1s"}
    async with local_stack(sim_config=config, env=env, redis_url=redis_url) as running:
        yield running


def calls(stack: Stack) -> int:
    return sum(stack.sim.calls.values())


def another(user: SlackUser, user_id: str) -> SlackUser:
    """The same workspace and channel, another person."""
    other = copy.copy(user)
    other.user_id = user_id
    return other


async def answers(stack: Stack, replies: list[Reply], timeout: float = 20.0) -> list[str]:
    """The response_url ids of ``replies`` in the order their first follow-up was posted."""
    ids = {r.response_id for r in replies}
    got = await stack.standin.wait_for(
        lambda cs: ids <= {c.name for c in cs if c.kind == "response"}, timeout=timeout
    )
    order: list[str] = []
    for call in got:
        if call.kind == "response" and call.name in ids and call.name not in order:
            order.append(call.name)
    return order


def text(stack: Stack, reply: Reply) -> str:
    return json.dumps(stack.standin.responses(reply.response_id)[0].body, ensure_ascii=False)


async def test_a_flood_of_unknown_ids_does_not_push_a_colleague_back(stack: Stack) -> None:
    flooder, colleague = stack.user, another(stack.user, "U0COLLEAG1")
    flood = list(await asyncio.gather(*(flooder.command_text(task_id) for task_id in JUNK)))
    asked = await colleague.command_text(TASK)
    assert all(r.status == 200 and r.elapsed < 3.0 for r in [*flood, asked])
    await answers(stack, [asked])

    # By the colleague's answer: one junk id took the free slot and another was served in
    # its turn, one turn ahead of the colleague; the flooder's other waiting questions are
    # still waiting (first come, first served would have answered all eight first); the
    # rest were refused at once, without a call, saying why and what to do.
    answered = {c.name for c in stack.standin.calls if c.kind == "response"}
    waiting = [r for r in flood if r.response_id not in answered]
    refused = [r for r in flood if r not in waiting and "questions waiting" in text(stack, r)]
    served = [r for r in flood if r not in waiting and r not in refused]
    assert len(refused) == len(JUNK) - 1 - MAX_QUEUED_PER_ASKER
    assert all("ask again" in text(stack, r) for r in refused)
    assert all("does not know this task" in text(stack, r) for r in served)
    assert waiting, "the colleague did not wait for all of the flooder's questions"
    assert len(served) + len(waiting) == 1 + MAX_QUEUED_PER_ASKER
    assert calls(stack) == len(served) + 1
    assert "Fetching" not in text(stack, asked)
    assert "does not know" not in text(stack, asked)
    # The flooder's waiting questions are answered in their turns afterwards.
    await answers(stack, waiting)
    assert calls(stack) == 1 + MAX_QUEUED_PER_ASKER + 1


async def test_asking_again_about_an_unknown_id_costs_no_call(stack: Stack) -> None:
    first = await stack.user.command_text(JUNK[0])
    await answers(stack, [first])
    spent = calls(stack)
    again = [await stack.user.command_text(JUNK[0]) for _ in range(5)]
    others = [await another(stack.user, f"U0OTHER00{i}").command_text(JUNK[0]) for i in range(3)]
    await answers(stack, [*again, *others])
    assert calls(stack) == spent == 1
    for reply in [first, *again, *others]:
        assert "does not know this task" in text(stack, reply)
        assert "HSS.0011" in text(stack, reply)
