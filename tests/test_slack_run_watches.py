"""Run watches through the real seams: signed commands and clicks into the bot over HTTP, a
real Redis, the Slack stand-in answering conversations.info, the simulator counting calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
import redis.asyncio as aioredis
from slack_sdk.models.blocks import Block

from bot.models import REGISTRY_TYPES, TaskRef
from bot.runs import RunKind
from bot.sandbox.localstack import Stack
from bot.sandbox.slack_standin import Channel, Scripted
from bot.slack.watch_text import render_watch_list
from bot.storage.run_watch_store import RunWatch, RunWatchStore
from bot.storage.watch_store import Watch
from tests.support import HOSTILE_RAW, home_views, said, watching_stack

MakeStack = Callable[..., Awaitable[Stack]]
CHANNELS = [Channel("C0OPS00001", "ops"), Channel("C0DEV00001", "dev")]


@pytest.fixture
async def make_stack(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[MakeStack]:
    async with AsyncExitStack() as exits:

        async def make(*, env: dict[str, str] | None = None) -> Stack:
            stack = watching_stack(redis_url, env=env, channels=CHANNELS)
            return await exits.enter_async_context(stack)

        yield make


def hss_calls(stack: Stack) -> int:
    return sum(stack.sim.calls.values())


async def test_watch_runs_says_what_is_followed_and_the_baseline(make_stack: MakeStack) -> None:
    stack = await make_stack()
    here = stack.user.channel_id
    reply = await said(stack, "watch runs auto type=Harbor")
    assert f"Following every scheduled (auto) run in <#{here}> (type=Harbor)" in reply
    assert "Runs that exist now are the baseline, not alerts" in reply
    assert "new, or still failing" in reply
    store = RunWatchStore(stack.runtime.redis)
    [watch] = await store.of_channel(here)
    assert (watch.kind, watch.types, watch.created_by) == (
        RunKind.AUTO,
        frozenset({"Harbor"}),
        "U0DEMO0001",
    )

    again = await said(stack, 'watch runs name="prod reg" auto', user="U0OTHER001")
    assert f"Updated the watch of auto runs in <#{here}> (name=`prod reg`)" in again
    assert "stay the baseline" in again
    [updated] = await store.of_channel(here)
    assert (updated.created_at, updated.created_by) == (watch.created_at, "U0DEMO0001")
    assert "every run, scheduled (auto) or manual" in await said(stack, "watch runs")
    assert "every manual run" in await said(stack, "watch runs manual")
    assert [w.kind for w in await store.of_channel(here)] == [None, RunKind.AUTO, RunKind.MANUAL]


async def test_watches_lists_runs_and_mute_unmute_unwatch_change_them(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    here = stack.user.channel_id
    await said(stack, "watch runs auto")
    await said(stack, "watch task-1")
    listed = await said(stack, "watches")
    assert "Watches in this channel* (2)" in listed
    assert listed.index("auto runs in") < listed.index("task-1")
    assert f"auto runs in <#{here}> · all registries · active" in listed

    assert f"Muted auto runs in <#{here}> until" in await said(stack, "mute runs auto 24h")
    assert "muted until" in await said(stack, "watches all")
    assert "are not followed" in await said(stack, "mute runs manual 1h")
    assert "Alerts for auto runs" in await said(stack, "unmute runs auto")
    [watch] = await RunWatchStore(stack.runtime.redis).of_channel(here)
    assert watch.muted_until is None

    assert f"Stopped following auto runs in <#{here}>." in await said(stack, "unwatch runs auto")
    not_followed = await said(stack, "unwatch runs auto")
    assert "Auto runs are not followed" in not_followed
    assert "/hss-sync watch runs auto" in not_followed
    assert "All runs are not followed" in await said(stack, "unmute runs")
    assert await RunWatchStore(stack.runtime.redis).all() == []


async def test_another_channel_is_named_with_slack_reference(make_stack: MakeStack) -> None:
    stack = await make_stack()
    assert "Following every manual run in <#C0OPS00001>" in await said(
        stack, "watch runs #ops manual"
    )
    store = RunWatchStore(stack.runtime.redis)
    assert [w.channel for w in await store.all()] == ["C0OPS00001"]
    assert "No task is watched in this channel, and no runs are followed" in await said(
        stack, "watches"
    )
    assert "manual runs in <#C0OPS00001>" in await said(stack, "watches all")
    assert "Stopped following" in await said(stack, "unwatch runs manual #ops")


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (Scripted(body={"ok": False, "error": "channel_not_found"}), "/invite @hss-sync"),
        (Scripted(body={"ok": True, "channel": {"is_archived": True}}), "is archived"),
        (Scripted(body={"ok": True, "channel": {"is_member": False}}), "not a member"),
        (Scripted(body={"ok": False, "error": "<!here>"}), "Slack refused to tell me"),
    ],
)
async def test_watch_runs_refuses_a_channel_the_bot_cannot_post_in(
    make_stack: MakeStack, answer: Scripted, says: str
) -> None:
    stack = await make_stack()
    stack.standin.fail_next("conversations.info", answer)
    reply = await said(stack, "watch runs")
    assert says in reply and "<!here>" not in reply
    assert await RunWatchStore(stack.runtime.redis).all() == []


async def test_only_admins_change_run_watches_when_admins_are_set(make_stack: MakeStack) -> None:
    stack = await make_stack(env={"HSS_WATCH_ADMINS": "U0ADMIN001"})
    store = RunWatchStore(stack.runtime.redis)
    assert "Only the watch admins" in await said(stack, "watch runs", user="U0SOMEONE1")
    assert await store.all() == []
    assert "Following" in await said(stack, "watch runs", user="U0ADMIN001")
    for text in ("unwatch runs", "mute runs 1h", "unmute runs"):
        assert "Only the watch admins" in await said(stack, text, user="U0SOMEONE1")
    [watch] = await store.all()
    assert watch.muted_until is None
    assert "all runs in" in await said(stack, "watches", user="U0SOMEONE1")  # anyone may look


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("watch runs daily", 'Unexpected "daily": watch runs takes auto or manual'),
        ("watch runs all", 'Leave out "all"'),
        ("watch runs #nowhere", "Slack did not send an id"),
        ("watch runs #ops #dev", "Give at most one channel"),
        ("unwatch runs #ops type=Harbor", 'Unexpected "type=Harbor"'),
        ("watch runs type=Docker", "Unknown registry type"),
        ("mute runs 9d", "out of range"),
        ('watch runs name="' + "n" * 300 + '"', "at most 128"),
        *[(f"watch runs {h}", "") for h in HOSTILE_RAW],
    ],
)
async def test_hostile_or_broken_run_commands_are_refused_inertly(
    make_stack: MakeStack, text: str, says: str
) -> None:
    stack = await make_stack()
    before = hss_calls(stack)
    reply = await said(stack, text)
    assert says in reply
    assert ":warning:" in reply and len(reply) < 1500
    for raw in ("<!channel>", "<!here>", "<@U", "<!subteam", "<https://evil"):
        assert raw not in reply
    assert await RunWatchStore(stack.runtime.redis).all() == []
    assert hss_calls(stack) == before  # refused input never reaches HSS


async def test_hostile_name_filter_is_stored_as_given_and_shown_inert(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    before = hss_calls(stack)
    reply = await said(stack, 'watch runs name="<!channel> <https://x|y>"')
    assert "Following" in reply and "<!channel>" not in reply and "<https://x" not in reply
    [watch] = await RunWatchStore(stack.runtime.redis).all()
    assert watch.name == "<!channel> <https://x|y>"  # typed text, as Slack sent it escaped
    listed = await said(stack, "watches")
    assert "<!channel>" not in listed and "&lt;!channel&gt;" in listed
    assert hss_calls(stack) == before  # a run watch is made without asking HSS


async def test_app_home_lists_run_watches_and_unwatches_them(make_stack: MakeStack) -> None:
    stack = await make_stack(env={"HSS_WATCH_ADMINS": "U0ADMIN001"})
    await said(stack, "watch runs manual name=prod", user="U0ADMIN001")
    await said(stack, "mute runs manual 2h", user="U0ADMIN001")
    stack.user.user_id = "U0SOMEONE1"
    await stack.user.event({"type": "app_home_opened", "tab": "home"})
    [view] = await home_views(stack, 1)
    text = json.dumps(view)
    assert "*manual runs* in" in text and "name=`prod`" in text and "muted until" in text
    unwatch = next(
        b["accessory"]
        for b in view["blocks"]
        if b.get("accessory", {}).get("action_id") == "hss_home_unwatch_runs"
    )
    store = RunWatchStore(stack.runtime.redis)

    await stack.user.click({**unwatch, "block_id": "home"})  # not an admin
    refused = (await home_views(stack, 2))[-1]
    assert "Only the watch admins" in json.dumps(refused) and len(await store.all()) == 1

    forged = {**unwatch, "value": '{"k":"autoSync","c":"<!here>"}'}
    stack.user.user_id = "U0ADMIN001"
    await stack.user.click(forged)
    assert "out of date" in json.dumps((await home_views(stack, 3))[-1])
    assert len(await store.all()) == 1

    await stack.user.click({**unwatch, "block_id": "home"})
    again = json.dumps((await home_views(stack, 4))[-1])
    assert await store.all() == [] and "no runs are followed" in again


def test_a_long_watch_list_stays_within_slacks_section_limit() -> None:
    now = 1_800_000_000.0
    tasks = [
        Watch(
            task=TaskRef("p", f"task-{i:02d}-" + "t" * 60),
            channel="C0OPS00001",
            name="n" * 128,
            types=frozenset(REGISTRY_TYPES),
            created_by="U1",
            created_at=now,
            last_alert_at=now,
        )
        for i in range(60)
    ]
    runs = [
        RunWatch(channel=f"C0{i:08d}", kind=None, created_by="U1", created_at=now) for i in range(3)
    ]
    message = render_watch_list(tasks, runs, now=now, everywhere=True)
    assert len(message.blocks) > 1
    for block in message.blocks:
        Block.parse(block).validate_json()  # type: ignore[union-attr]
    text = "\n".join(b["text"]["text"] for b in message.blocks)
    assert "(63)" in text and "_…and 23 more_" in text and text.count("• ") == 40
