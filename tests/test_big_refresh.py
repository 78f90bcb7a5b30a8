"""Refresh of a view that takes several HSS calls: refused (with the age) while it is younger
than a minute, and otherwise it says what it costs before spending it. A one-call view is
refreshed as before. Signed clicks over HTTP, the simulator counting calls, a real Redis."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.mirror import Change, Snapshot
from bot.models import LookupRequest, TaskRef
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import SimConfig
from bot.sandbox.slack_requests import Reply, button, buttons
from bot.slack.render import ACTION_REFRESH, ACTION_REFRESH_CONFIRM
from bot.storage.mirror_store import RedisMirrorStore
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK
from tests.support import until

BIG = "task-big"  # 1,000 registries: 5 pages of 200
SMALL = "task-small"


@pytest.fixture
async def stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[Stack]:
    config = SimConfig(
        ak=TEST_AK,
        sk=TEST_SK,
        project_id=TEST_PROJECT_ID,
        rate_limit=1000,
        task_sizes={BIG: 1000, SMALL: 57},
    )
    env = {"HSS_RATE_LIMIT": "1000/60s", "HSS_FRESH_SECONDS": "0.3"}
    async with local_stack(sim_config=config, env=env, redis_url=redis_url) as running:
        yield running


def calls(stack: Stack) -> int:
    return sum(stack.sim.calls.values())


def text_of(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


async def posts(stack: Stack, reply: Reply, count: int) -> list[dict[str, Any]]:
    await stack.standin.wait_for(
        lambda cs: len([c for c in cs if c.name == reply.response_id]) >= count
    )
    return [c.body for c in stack.standin.responses(reply.response_id)]


async def answered(stack: Stack, text: str) -> dict[str, Any]:
    """The answer to a command: in its ack if the mirror was fresh, else the one that follows."""
    reply = await stack.user.command_text(text)
    if "Fetching fresh data" not in text_of(reply.body):
        return reply.body
    return (await posts(stack, reply, 1))[0]


async def older(stack: Stack, task: str, seconds: float) -> None:
    """Make the mirror's data of ``task`` ``seconds`` older, as if fetched that long ago."""

    async def aged(snap: Snapshot) -> tuple[Snapshot, list[Change]]:
        views = {
            key: dataclasses.replace(view, fetched_at=view.fetched_at - seconds)
            for key, view in snap.views.items()
        }
        return dataclasses.replace(snap, views=views), []

    await RedisMirrorStore(stack.runtime.redis).update(TaskRef(TEST_PROJECT_ID, task), aged)

    async def seen() -> bool:  # the bot reuses what it read for a moment: until it reads again
        answer = (await stack.runtime.lookups.peek(LookupRequest(task))).answer
        return answer.fetched_at is not None and answer.fetched_at < time.time() - seconds / 2

    await until(seen, what="the bot sees the older data")


async def test_a_big_view_younger_than_a_minute_is_not_refreshed(stack: Stack) -> None:
    first = await answered(stack, BIG)
    assert calls(stack) == 5
    click = await stack.user.click(button(first, ACTION_REFRESH))
    [refused] = await posts(stack, click, 1)
    said = text_of(refused)
    assert "takes 5 HSS calls to refresh" in said
    assert "s ago" in said and "when it is a minute old" in said
    assert refused["replace_original"] is True
    assert stack.slack is not None
    await stack.slack.background.settled()
    assert calls(stack) == 5


async def test_a_big_view_says_what_it_costs_then_refreshes_when_confirmed(stack: Stack) -> None:
    first = await answered(stack, BIG)
    await older(stack, BIG, 120.0)
    click = await stack.user.click(button(first, ACTION_REFRESH))
    [offer] = await posts(stack, click, 1)
    said = text_of(offer)
    assert "Refreshing this view takes 5 HSS calls" in said
    assert "fresh data in about" in said
    confirm = button(offer, ACTION_REFRESH_CONFIRM)
    assert confirm["text"]["text"] == "Refresh (5 calls)"
    assert ACTION_REFRESH not in [b["action_id"] for b in buttons(offer)]
    assert stack.slack is not None
    await stack.slack.background.settled()
    assert calls(stack) == 5  # nothing spent before the confirmation

    confirmed = await stack.user.click(confirm)
    notice, fresh = await posts(stack, confirmed, 2)
    assert "Refreshing: 5 HSS calls, fresh data at about" in text_of(notice)
    assert "data from" in text_of(fresh) and fresh["replace_original"] is True
    assert calls(stack) == 10


async def test_a_confirmation_for_a_view_refreshed_meanwhile_spends_nothing(stack: Stack) -> None:
    first = await answered(stack, BIG)
    await older(stack, BIG, 120.0)
    offer = (await posts(stack, await stack.user.click(button(first, ACTION_REFRESH)), 1))[0]
    again = await stack.user.command_text(BIG)  # someone else asks: a fresh fetch
    await posts(stack, again, 1)
    assert calls(stack) == 10
    late = await stack.user.click(button(offer, ACTION_REFRESH_CONFIRM))
    [refused] = await posts(stack, late, 1)
    assert "when it is a minute old" in text_of(refused)
    assert calls(stack) == 10


async def test_a_one_call_view_refreshes_as_before(stack: Stack) -> None:
    first = await answered(stack, SMALL)
    await older(stack, SMALL, 1.0)  # older than HSS_FRESH_SECONDS, far younger than a minute
    click = await stack.user.click(button(first, ACTION_REFRESH))
    [fresh] = await posts(stack, click, 1)
    assert "data from" in text_of(fresh) and "HSS calls" not in text_of(fresh)
    assert calls(stack) == 2


async def test_a_filtered_view_of_one_page_is_one_call(stack: Stack) -> None:
    await answered(stack, BIG)
    failed = await answered(stack, f"{BIG} failed")  # answered from the whole-task view
    await older(stack, BIG, 1.0)
    click = await stack.user.click(button(failed, ACTION_REFRESH))
    [fresh] = await posts(stack, click, 1)
    assert "HSS calls" not in text_of(fresh)
    assert calls(stack) == 6  # the failed registries alone: one page
