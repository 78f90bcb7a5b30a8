"""The App Home's "Recent runs" and task references in the watch form, end to end: signed
Slack requests into the bot, the simulator's sync runs over HTTP, a real Redis. Rendering
Home never calls HSS: it shows the stored run list with its age, or one sentence."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.runs import SyncRun
from bot.sandbox.localstack import Stack
from bot.slack.watch_form import CALLBACK_ADD_WATCH
from bot.storage.watch_store import WatchStore
from tests.support import home_views, said, until, watching_stack

MakeStack = Callable[..., Awaitable[Stack]]
SIM_RUNS: dict[str, Any] = {
    "run_registries": 30,
    "run_failure_rate": 0.3,
    "run_every": 3600.0,
    "run_duration": 600.0,
    "run_history": 4,
}


@pytest.fixture
async def make_stack(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[MakeStack]:
    async with AsyncExitStack() as exits:

        async def make() -> Stack:
            return await exits.enter_async_context(watching_stack(redis_url, **SIM_RUNS))

        yield make


def all_calls(stack: Stack) -> int:
    return sum(sum(api.calls.values()) for api in stack.sim.apis.values())


def listed(stack: Stack) -> list[SyncRun]:
    return [
        SyncRun(**{k: v for k, v in info.items() if k != "remain_min"})
        for info in stack.sim.listed_runs()
    ]


async def open_home(stack: Stack, count: int) -> str:
    await stack.user.event({"type": "app_home_opened", "tab": "home"})
    return json.dumps((await home_views(stack, count))[-1], ensure_ascii=False)


async def test_home_shows_recent_runs_from_the_stored_list_without_calls(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    before = all_calls(stack)
    first = await open_home(stack, 1)
    assert "*Recent runs*" in first and "No run list yet" in first
    assert all_calls(stack) == before

    await said(stack, "tasks")  # fetches the run list once
    await until(lambda: _stored(stack), what="the run list stored")
    calls = all_calls(stack)
    home = await open_home(stack, 2)
    assert all_calls(stack) == calls  # Home reads what is stored
    runs = listed(stack)
    newest = runs[0]
    assert f"id `{newest.task_id}`" in home and "data from" in home
    failing = next(r for r in runs[:5] if r.failed_num)
    assert f":x: *{failing.failed_num}* failed" in home
    assert home.index("*Recent runs*") < home.index("No task is watched yet")


async def _stored(stack: Stack) -> bool:
    assert stack.runtime.runs is not None
    return await stack.runtime.runs.peek() is not None


async def test_a_refused_run_list_is_one_sentence_on_home(make_stack: MakeStack) -> None:
    stack = await make_stack()
    stack.sim.queue(403)
    assert "The list of sync runs is unavailable" in await said(stack, "latest failed")
    calls = all_calls(stack)
    home = await open_home(stack, 1)
    assert "The list of sync runs is unavailable" in home
    assert "plain task ids keep working" in home
    assert all_calls(stack) == calls


async def test_the_form_takes_a_task_reference_and_names_the_run(make_stack: MakeStack) -> None:
    stack = await make_stack()
    auto = next(r for r in listed(stack) if r.task_type == "autoSync")
    values = {
        "task": {"value": {"type": "plain_text_input", "value": "latest-auto"}},
        "channel": {
            "value": {"type": "conversations_select", "selected_conversation": "C0OPS00001"}
        },
    }
    reply = await stack.user.submit_view(CALLBACK_ADD_WATCH, values)
    assert reply.status == 200 and reply.elapsed < 3.0 and reply.body == {}
    [watch] = await WatchStore(stack.runtime.redis).all()
    assert (watch.task.task_id, watch.channel) == (auto.task_id, "C0OPS00001")
    await stack.standin.wait_for(lambda cs: any(c.name == "chat.postEphemeral" for c in cs))
    posted = stack.standin.api("chat.postEphemeral")[0].body["text"]
    assert "`latest-auto` is" in posted and auto.task_id in posted and "Watching task" in posted


async def test_a_reference_with_no_run_is_an_error_on_the_task_field(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    stack.sim.queue(403)
    values = {
        "task": {"value": {"type": "plain_text_input", "value": "latest"}},
        "channel": {
            "value": {"type": "conversations_select", "selected_conversation": "C0OPS00001"}
        },
    }
    reply = await stack.user.submit_view(CALLBACK_ADD_WATCH, values)
    assert reply.status == 200 and reply.elapsed < 3.0
    assert reply.body["response_action"] == "errors"
    assert "The list of sync runs is unavailable" in reply.body["errors"]["task"]
    assert await WatchStore(stack.runtime.redis).all() == []


async def test_watch_runs_names_the_newest_known_run_of_its_kind(make_stack: MakeStack) -> None:
    stack = await make_stack()
    assert "the newest I know of" not in await said(stack, "watch runs manual")
    await said(stack, "tasks")
    await until(lambda: _stored(stack), what="the run list stored")
    calls = all_calls(stack)
    auto = next(r for r in listed(stack) if r.task_type == "autoSync")
    reply = await said(stack, "watch runs auto")
    assert "Runs that exist now are the baseline, not alerts (the newest I know of is" in reply
    assert f"id `{auto.task_id}`" in reply
    assert all_calls(stack) == calls  # from the stored list, without a call
