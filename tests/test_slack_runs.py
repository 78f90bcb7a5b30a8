"""Task references and ``/hss-sync tasks`` end to end: signed Slack requests into the bot over
HTTP, the HSS simulator (its sync runs) over HTTP, a real Redis and the Slack stand-in."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.hss.budget import Priority
from bot.runs import SyncRun
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import SimConfig
from bot.sandbox.slack_requests import Reply, button, buttons
from bot.slack.action_value import encode_tasks_value
from bot.slack.render_tasks import (
    ACTION_TASKS_FAILED,
    ACTION_TASKS_NEXT,
    ACTION_TASKS_PREV,
    TASKS_PAGE_SIZE,
)
from bot.slack.tasks_command import ListTasks
from bot.slack.text import escape
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis
from bot.storage.watch_store import WatchStore
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK
from tests.support import check_message

MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[MakeStack]:
    """``await make_stack(**SimConfig fields)``: the bot with watches, on the test Redis (or
    on the one at ``url``), ``env`` overriding its settings."""
    async with AsyncExitStack() as exits:

        async def make(
            url: str | None = None, env: dict[str, str] | None = None, **sim: Any
        ) -> Stack:
            config: dict[str, Any] = {
                "ak": TEST_AK,
                "sk": TEST_SK,
                "project_id": TEST_PROJECT_ID,
                "rate_limit": 1000,
                "run_registries": 30,
                "run_failure_rate": 0.3,
                "run_every": 3600.0,
                "run_duration": 600.0,
                "run_history": 4,
            }
            config.update(sim)
            return await exits.enter_async_context(
                local_stack(
                    sim_config=SimConfig(**config),
                    redis_url=url or redis_url,
                    watches=True,
                    env=env,
                )
            )

        yield make


def calls(stack: Stack, api: str) -> int:
    return sum(stack.sim.apis[api].calls.values())


def listed(stack: Stack) -> list[SyncRun]:
    return [
        SyncRun(**{k: v for k, v in info.items() if k != "remain_min"})
        for info in stack.sim.listed_runs()
    ]


def text_of(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


async def followup(stack: Stack, reply: Reply, index: int = 0) -> dict[str, Any]:
    """The ``index``-th response_url post made for ``reply``."""
    got = await stack.standin.wait_for(lambda cs: len(responses(cs, reply)) > index)
    return responses(got, reply)[index]


def responses(cs: list[Any], reply: Reply) -> list[dict[str, Any]]:
    return [c.body for c in cs if c.kind == "response" and c.name == reply.response_id]


async def answered(stack: Stack, reply: Reply) -> dict[str, Any]:
    """The last word on a command: the ack, or the follow-up that replaced it."""
    if "Fetching" not in text_of(reply.body) and "in a moment" not in text_of(reply.body):
        return reply.body
    return await followup(stack, reply)


async def refused(stack: Stack, text: str) -> str:
    """A command refused for its input: at once, ephemeral, one section, no HSS call."""
    before = sum(stack.sim.calls.values())
    reply = await stack.user.command_text(text)
    assert reply.status == 200 and reply.elapsed < 3.0
    assert reply.body["response_type"] == "ephemeral"
    [block] = reply.body["blocks"]
    assert block["text"]["text"].startswith(":warning:")
    assert sum(stack.sim.calls.values()) == before
    return str(block["text"]["text"])


# --- references ----------------------------------------------------------------------------


async def test_latest_failed_names_the_run_and_shows_its_failures(make_stack: MakeStack) -> None:
    stack = await make_stack()
    newest = listed(stack)[0]
    reply = await stack.user.command_text("latest failed")
    assert reply.status == 200
    first = text_of(reply.body)
    assert ":pushpin: `latest` is" in first and f"`{newest.task_id}`" in first
    final = await answered(stack, reply)
    said = text_of(final)
    assert f"`{escape(newest.task_name)}`" in said and f"id `{newest.task_id}`" in said
    assert f"task {newest.task_id}" in said  # the answer is the run's task
    failed = [r for r in stack.sim.registries(newest.task_id) if r.sync_status == "failed"]
    assert failed and all(r.registry_name in said for r in failed[:5])
    assert calls(stack, "tasks") == 1
    # Paging and Refresh on it carry the run's own id, not "latest".
    values = [b["value"] for b in buttons(final)]
    assert values and all(f'"t":"{newest.task_id}"' in v for v in values)


async def test_latest_auto_and_manual_pick_their_kind(make_stack: MakeStack) -> None:
    stack = await make_stack()
    reply = await stack.user.command_text("latest-manual")  # none yet: one call, a sentence
    [block] = reply.body["blocks"]
    assert "HSS lists no manualSync sync runs" in block["text"]["text"]
    assert calls(stack, "tasks") == 1 and calls(stack, "registries") == 0
    manual = stack.sim.start_run("manual")
    await stack.runtime.redis.delete(keys.runs(TEST_PROJECT_ID, None))  # forget the list
    reply = await stack.user.command_text("LATEST-MANUAL")
    assert f"`{manual.task_id}`" in text_of(reply.body)
    auto = next(r for r in listed(stack) if r.task_type == "autoSync")
    reply = await stack.user.command_text("latest-auto running")
    assert f"`{auto.task_id}`" in text_of(reply.body)
    assert calls(stack, "tasks") == 2  # the young list answered latest-auto


async def test_a_refused_list_is_one_sentence_and_task_ids_keep_working(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    stack.sim.queue(403)
    reply = await stack.user.command_text("latest failed")
    [block] = reply.body["blocks"]
    said = block["text"]["text"]
    assert "The list of sync runs is unavailable" in said
    assert said.endswith("plain task ids keep working.")
    assert await stack.runtime.lookups.auth_lock() is None
    run = listed(stack)[0]
    reply = await stack.user.command_text(f"{run.task_id} failed")
    final = await answered(stack, reply)
    assert f"task {run.task_id}" in text_of(final) and calls(stack, "registries") >= 1
    # tasks says the same sentence, without another list call.
    tasks_before = stack.sim.by_status.get(403, 0)
    reply = await stack.user.command_text("tasks")
    assert "The list of sync runs is unavailable" in text_of(reply.body)
    assert stack.sim.by_status.get(403, 0) == tasks_before


async def test_watch_latest_watches_the_run_it_names(make_stack: MakeStack) -> None:
    stack = await make_stack()
    auto = next(r for r in listed(stack) if r.task_type == "autoSync")
    reply = await stack.user.command_text("watch latest-auto")
    said = text_of(reply.body)
    assert "`latest-auto` is" in said and f"`{auto.task_id}`" in said and "Watching task" in said
    [watch] = await WatchStore(stack.runtime.redis).of_channel(stack.user.channel_id)
    assert watch.task.task_id == auto.task_id
    reply = await stack.user.command_text("unwatch latest-auto")
    assert "Stopped watching" in text_of(reply.body)
    assert await WatchStore(stack.runtime.redis).of_channel(stack.user.channel_id) == []


async def test_a_button_holding_a_reference_resolves_it(make_stack: MakeStack) -> None:
    stack = await make_stack()
    newest = listed(stack)[0]
    forged = {"action_id": "hss_page_next", "value": '{"v":1,"t":"latest","p":0}'}
    reply = await stack.user.click(forged)
    assert reply.status == 200
    shown = text_of(await followup(stack, reply))
    assert f"task {newest.task_id}" in shown


# --- tasks ---------------------------------------------------------------------------------


async def test_tasks_lists_runs_newest_first_then_pages_without_calls(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(run_history=14, run_failure_rate=0.3)
    runs = listed(stack)
    reply = await stack.user.command_text("tasks")
    assert reply.status == 200 and reply.elapsed < 3.0
    first = await answered(stack, reply)
    check_message_dict(first)
    said = text_of(first)
    shown = [r for r in runs if f"`{r.task_id}`" in said]
    assert shown == runs[:TASKS_PAGE_SIZE]  # newest first, one page
    order = [said.index(f"`{r.task_id}`") for r in shown]
    assert order == sorted(order)
    assert f"runs 1–{TASKS_PAGE_SIZE} of {len(runs)}" in said
    assert f"{runs[0].failed_num}* failed" in said or runs[0].failed_num == 0
    fails = [b for b in buttons(first) if b["action_id"] == ACTION_TASKS_FAILED]
    assert len(fails) == TASKS_PAGE_SIZE
    assert calls(stack, "tasks") == 1
    # A second tasks right away: from the young list, in the ack.
    again = await stack.user.command_text("tasks")
    assert "Fetching" not in text_of(again.body) and calls(stack, "tasks") == 1
    nxt = await stack.user.click(button(first, ACTION_TASKS_NEXT))
    page2 = text_of(await followup(stack, nxt))
    assert all(f"`{r.task_id}`" in page2 for r in runs[TASKS_PAGE_SIZE:])
    assert f"`{runs[0].task_id}`" not in page2
    back = await stack.user.click(button(await followup(stack, nxt), ACTION_TASKS_PREV))
    assert f"`{runs[0].task_id}`" in text_of(await followup(stack, back))
    assert calls(stack, "tasks") == 1 and calls(stack, "registries") == 0


async def test_show_failed_runs_the_lookup_of_that_run(make_stack: MakeStack) -> None:
    stack = await make_stack()
    reply = await stack.user.command_text("tasks failed")
    first = await answered(stack, reply)
    runs = [r for r in listed(stack) if r.failed_num]
    assert runs
    said = text_of(first)
    assert all(f"`{r.task_id}`" in said for r in runs)
    assert not any(f"`{r.task_id}`" in said for r in listed(stack) if not r.failed_num)
    click = await stack.user.click(button(first, ACTION_TASKS_FAILED))
    answer = text_of(await stack_final(stack, click))
    assert f"task {runs[0].task_id}" in answer and "filters: failed" in answer
    assert calls(stack, "registries") >= 1


async def test_tasks_filters_by_kind_and_name(make_stack: MakeStack) -> None:
    stack = await make_stack()
    manual = stack.sim.start_run("manual")
    said = text_of(await answered(stack, await stack.user.command_text("tasks manual")))
    assert f"`{manual.task_id}`" in said
    assert not any(f"`{r.task_id}`" in said for r in listed(stack) if r.task_type == "autoSync")
    part = manual.task_name[3:12].upper()
    said = text_of(await answered(stack, await stack.user.command_text(f'tasks name="{part}"')))
    assert f"`{manual.task_id}`" in said and "runs 1–1 of 1" in said
    said = text_of(await answered(stack, await stack.user.command_text("tasks auto name=zzz")))
    assert "No sync runs match: auto · name=`zzz`." in said
    assert calls(stack, "tasks") == 1  # one list serves every filter


async def test_tasks_escapes_hostile_run_names(make_stack: MakeStack) -> None:
    stack = await make_stack(hostile=True, run_history=6)
    first = await answered(stack, await stack.user.command_text("tasks"))
    check_message_dict(first)
    said = text_of(first)
    for run in listed(stack):
        assert f"`{run.task_id}`" in said or escape(run.task_id) in said


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("tasks bogus", 'Unexpected "bogus"'),
        ("tasks auto manual", "repeats a filter"),
        ("tasks failed failed", "repeats a filter"),
        ("tasks kind=auto", 'Unknown option "kind="'),
        ("tasks name=", "name= needs part of a run name"),
        ("tasks name=" + "x" * 257, "too long: at most 256"),
        ("tasks name=a\u200bb", "U+200B ZERO WIDTH SPACE"),
        ("tasks name=a\u202eb", "text-direction mark"),
        ("tasks auto name=x failed extra", "Too many words"),
        ("tasks #general", "takes no channels"),
    ],
)
async def test_tasks_refuses_bad_input_at_once(make_stack: MakeStack, text: str, says: str) -> None:
    stack = await make_stack()
    stack.user.channels["general"] = "C0GENERAL1"
    assert says in await refused(stack, text)


@pytest.mark.parametrize(
    ("action_id", "value"),
    [
        (ACTION_TASKS_NEXT, "junk"),
        (ACTION_TASKS_NEXT, '{"r":1,"p":-1}'),
        (ACTION_TASKS_NEXT, '{"r":1,"p":0,"k":"scan"}'),
        (ACTION_TASKS_NEXT, '{"r":1,"p":0,"k":["autoSync"]}'),
        (ACTION_TASKS_NEXT, '{"r":1,"p":0,"n":"a\\u200bb"}'),
        (ACTION_TASKS_NEXT, '{"r":1,"p":0,"f":true}'),
        (ACTION_TASKS_NEXT, '{"v":1,"t":"task-1","p":0}'),
        (ACTION_TASKS_FAILED, '{"r":1,"p":0}'),
        (ACTION_TASKS_FAILED, '{"v":1,"t":"a b","p":0}'),
        (ACTION_TASKS_FAILED, "x" * 3000),
    ],
)
async def test_forged_tasks_buttons_are_refused_without_a_call(
    make_stack: MakeStack, action_id: str, value: str
) -> None:
    stack = await make_stack()
    reply = await stack.user.click({"action_id": action_id, "value": value})
    assert reply.status == 200 and reply.elapsed < 3.0
    said = text_of(await followup(stack, reply))
    assert "out of date or damaged" in said
    assert sum(stack.sim.calls.values()) == 0


def test_tasks_values_round_trip() -> None:
    from bot.runs import RunKind
    from bot.slack.action_value import decode_tasks_value

    query = ListTasks(kind=RunKind.AUTO, name='a "b" <c>', failed=True)
    assert decode_tasks_value(encode_tasks_value(query, 3)) == (query, 3)
    assert decode_tasks_value(encode_tasks_value(ListTasks(), 0)) == (ListTasks(), 0)


# --- helpers that read messages --------------------------------------------------------------


def check_message_dict(body: dict[str, Any]) -> None:
    from bot.slack.render import Message

    check_message(Message(text=body["text"], blocks=body["blocks"]), OURS)


#: The ``<...>`` tokens the bot writes in a run list: Slack date tokens (all else is escaped).
OURS = re.compile(r"<!date\^[0-9]+\^[^|<>]*\|[^<>]*>")


async def stack_final(stack: Stack, reply: Reply) -> dict[str, Any]:
    """The last response_url post for a click (its answer, after any placeholder)."""
    first = await followup(stack, reply)
    if "Fetching" not in text_of(first):
        return first
    return await followup(stack, reply, 1)


def test_help_shows_tasks_and_the_references() -> None:
    from bot.slack.render import render_help
    from tests.support import mrkdwn_of

    help_text = mrkdwn_of(render_help())
    for words in ("/hss-sync tasks", "/hss-sync latest failed", "latest-auto", "latest-manual"):
        assert words in help_text, words


async def test_tasks_answers_at_once_from_an_old_list_then_replaces_it(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    await answered(stack, await stack.user.command_text("tasks"))
    # The list is ten minutes old now, and a manual run has begun since.
    key = keys.runs(TEST_PROJECT_ID, None)
    at = float(await stack.runtime.redis.hget(key, "at") or 0)
    await stack.runtime.redis.hset(key, "at", repr(at - 600))
    manual = stack.sim.start_run("manual")
    reply = await stack.user.command_text("tasks")
    first = text_of(reply.body)
    assert "data from 10 min ago" in first and "Fetching the runs from HSS" in first
    assert f"`{manual.task_id}`" not in first
    fresh = text_of(await followup(stack, reply))
    assert f"`{manual.task_id}`" in fresh and re.search("data from [0-9]+ s ago", fresh)
    assert "Fetching" not in fresh and calls(stack, "tasks") == 2


async def test_a_burst_of_latest_questions_costs_one_list_call(make_stack: MakeStack) -> None:
    stack = await make_stack()
    stack.sim.set_faults(latency_ms=300)  # the call is still out when the others ask
    replies = await asyncio.gather(
        *(stack.user.command_text(word) for word in ("latest", "latest-auto", "latest") * 3)
    )
    assert all(r.status == 200 for r in replies)
    assert calls(stack, "tasks") == 1


def test_a_page_of_the_longest_runs_stays_within_slack_s_limits() -> None:
    from bot.slack.render_tasks import RunList, render_tasks

    hostile = "<!channel> *b* _i_ `c` &amp; \u202e" * 20
    runs = tuple(
        SyncRun(
            task_id=f"{i:02d}" + "x" * 62,
            task_name=hostile[:256],
            task_type="autoSync" if i % 2 else "cycle<&>",
            begin_time=1_700_000_000_000 + i,
            end_time=None if i % 3 else 1_700_000_600_000,
            task_status=[40, 100, -1, -2, -3, None, 250][i % 7],
            failed_num=10**9,
            success_num=10**9,
            total_num=10**9,
            failed_reason=hostile[:128],
        )
        for i in range(25)
    )
    query = ListTasks(name=hostile.replace("\u202e", "")[:256], failed=True)
    for page in (0, 1, 2):
        message = render_tasks(RunList(query=query, runs=runs, fetched_at=1e9), page=page, now=2e9)
        check_message_dict({"text": message.text, "blocks": message.blocks})


async def test_with_redis_away_tasks_and_references_answer_as_lookups_do(
    make_stack: MakeStack, redis_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    # Lookups by task id go on from this replica's memory; so do the runs it had listed.
    stack = await make_stack(url=redis_server.url)
    await answered(stack, await stack.user.command_text("tasks"))
    newest = listed(stack)[0]
    await asyncio.to_thread(redis_server.stop)
    caplog.set_level(logging.WARNING)
    for text in ("tasks failed", "latest failed"):
        reply = await stack.user.command_text(text)
        assert reply.status == 200 and reply.elapsed < 3.0
        said = text_of(reply.body)
        assert "Something went wrong" not in said
        assert "data from" in said or "Fetching" in said
        assert f"`{newest.task_id}`" in said
        final = text_of(await answered(stack, reply))
        assert f"`{newest.task_id}`" in final and "data from" in final
    reply = await stack.user.command_text("watch latest")  # watches need Redis: one sentence
    assert "Watches are kept in Redis" in text_of(reply.body)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await asyncio.to_thread(redis_server.start)


async def test_a_reference_on_a_busy_run_list_budget_answers_at_once_from_the_older_list(
    make_stack: MakeStack,
) -> None:
    # Like a lookup, from what the bot knows: the run an older list names, in the ack,
    # rather than "Working on it" and, 30 s later, "try again in a minute".
    stack = await make_stack(env={"HSS_TASKS_RATE_LIMIT": "1/60s"})
    await stack.runtime.runs.refresh(priority=Priority.INTERACTIVE)  # the minute's one call
    key = keys.runs(TEST_PROJECT_ID, None)
    at = float(await stack.runtime.redis.hget(key, "at") or 0)
    await stack.runtime.redis.hset(key, "at", repr(at - 600))
    newest = listed(stack)[0]
    reply = await stack.user.command_text("latest failed")
    assert reply.status == 200 and reply.elapsed < 3.0
    said = text_of(reply.body)
    assert ":pushpin: `latest` is" in said and f"`{newest.task_id}`" in said
    assert f"task {newest.task_id}" in text_of(await answered(stack, reply))
