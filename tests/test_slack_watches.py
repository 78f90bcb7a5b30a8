"""The watch sub-commands end to end: signed commands into the bot over HTTP, a real
Redis, the simulator, and the Slack stand-in answering conversations.info."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import SimConfig
from bot.sandbox.slack_standin import Call, Scripted
from bot.storage.watch_store import WatchStore
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK

TASK = "task-watch"
MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[MakeStack]:
    async with AsyncExitStack() as exits:

        async def make(*, env: dict[str, str] | None = None) -> Stack:
            config = SimConfig(
                ak=TEST_AK,
                sk=TEST_SK,
                project_id=TEST_PROJECT_ID,
                rate_limit=1000,
                task_sizes={TASK: 57},
            )
            return await exits.enter_async_context(
                local_stack(sim_config=config, env=env, redis_url=redis_url, watches=True)
            )

        yield make


def text_of(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


async def published(stack: Stack, count: int) -> list[Call]:
    """The first ``count`` ``views.publish`` calls, once made (Home work runs after the ack)."""
    await stack.standin.wait_for(
        lambda cs: len([c for c in cs if c.name == "views.publish"]) >= count
    )
    return stack.standin.api("views.publish")


async def command(stack: Stack, text: str, user: str = "U0DEMO0001") -> str:
    stack.user.user_id = user
    reply = await stack.user.command_text(text)
    assert reply.status == 200
    assert reply.body["response_type"] == "ephemeral"
    return text_of(reply.body)


async def test_watch_confirms_with_the_current_failures_as_baseline(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await stack.user.command_text(f"{TASK} failed")  # the mirror learns the task
    await stack.standin.wait_for(lambda cs: any(c.kind == "response" for c in cs))
    failed = sum(1 for r in stack.sim.registries(TASK) if r.sync_status == "failed")
    said = await command(stack, f"watch {TASK}")
    assert "Watching task" in said and f"<#{stack.user.channel_id}>" in said
    assert f"{failed} registries are failed right now" in said
    store = WatchStore(stack.runtime.redis)
    [watch] = await store.of_channel(stack.user.channel_id)
    assert watch.task.task_id == TASK and watch.created_by == "U0DEMO0001"


async def test_watches_lists_and_unwatch_removes(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await command(stack, f"watch {TASK} type=Harbor")
    listed = await command(stack, "watches")
    assert TASK in listed and "type=Harbor" in listed
    assert "Stopped watching" in await command(stack, f"unwatch {TASK}")
    assert "No task is watched in this channel" in await command(stack, "watches")
    assert "is not watched" in await command(stack, f"unwatch {TASK}")


async def test_mute_and_unmute(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await command(stack, f"watch {TASK}")
    assert "Muted task" in await command(stack, f"mute {TASK} 24h")
    store = WatchStore(stack.runtime.redis)
    [watch] = await store.of_channel(stack.user.channel_id)
    assert watch.muted_until is not None
    assert "muted until" in await command(stack, "watches")
    assert "are on again" in await command(stack, f"unmute {TASK}")
    [watch] = await store.of_channel(stack.user.channel_id)
    assert watch.muted_until is None


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (Scripted(body={"ok": False, "error": "channel_not_found"}), "/invite @hss-sync"),
        (Scripted(body={"ok": True, "channel": {"is_archived": True}}), "is archived"),
        (Scripted(body={"ok": True, "channel": {"is_member": False}}), "not a member"),
    ],
)
async def test_watch_refuses_a_channel_the_bot_cannot_post_in(
    make_stack: MakeStack, answer: Scripted, says: str
) -> None:
    stack = await make_stack()
    stack.standin.fail_next("conversations.info", answer)
    said = await command(stack, f"watch {TASK}")
    assert says in said
    assert await WatchStore(stack.runtime.redis).all() == []


async def test_only_admins_change_watches_when_admins_are_set(make_stack: MakeStack) -> None:
    stack = await make_stack(env={"HSS_WATCH_ADMINS": "U0ADMIN001,S0OPSTEAM1"})
    refused = await command(stack, f"watch {TASK}", user="U0SOMEONE1")
    assert "Only the watch admins" in refused
    assert await WatchStore(stack.runtime.redis).all() == []
    assert "Watching task" in await command(stack, f"watch {TASK}", user="U0ADMIN001")
    # Anyone may look.
    assert TASK in await command(stack, "watches", user="U0SOMEONE1")
    assert "Only the watch admins" in await command(stack, f"unwatch {TASK}", user="U0SOMEONE1")


async def test_a_user_group_member_counts_as_admin(make_stack: MakeStack) -> None:
    stack = await make_stack(env={"HSS_WATCH_ADMINS": "S0OPSTEAM1"})
    stack.standin.fail_next(
        "usergroups.users.list", Scripted(body={"ok": True, "users": ["U0MEMBER01"]})
    )
    assert "Watching task" in await command(stack, f"watch {TASK}", user="U0MEMBER01")
    assert [c.body.get("usergroup") for c in stack.standin.api("usergroups.users.list")] == [
        "S0OPSTEAM1"
    ]


async def test_hostile_names_in_watch_filters_are_inert(make_stack: MakeStack) -> None:
    stack = await make_stack()
    said = await command(stack, f'watch {TASK} name="<!channel> <https://x|y>"')
    assert "<!channel>" not in said and "<https://x" not in said


async def test_app_home_lists_watches_and_unwatches(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await command(stack, f"watch {TASK} type=Harbor")
    reply = await stack.user.event({"type": "app_home_opened", "tab": "home"})
    assert reply.status == 200
    [home] = await published(stack, 1)
    assert home.body["user_id"] == stack.user.user_id
    view = home.body["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view["type"] == "home" and TASK in text_of(view)
    unwatch = next(
        b["accessory"] for b in view["blocks"] if b.get("accessory", {}).get("type") == "button"
    )
    await stack.user.click({**unwatch, "block_id": "home"})
    again = (await published(stack, 2))[-1].body["view"]
    assert await WatchStore(stack.runtime.redis).all() == []
    again = json.loads(again) if isinstance(again, str) else again
    assert "No task is watched yet" in text_of(again)


async def test_app_home_unwatch_checks_permission(make_stack: MakeStack) -> None:
    stack = await make_stack(env={"HSS_WATCH_ADMINS": "U0ADMIN001"})
    await command(stack, f"watch {TASK}", user="U0ADMIN001")
    stack.user.user_id = "U0SOMEONE1"
    await stack.user.event({"type": "app_home_opened", "tab": "home"})
    view = (await published(stack, 1))[-1].body["view"]
    view = json.loads(view) if isinstance(view, str) else view
    unwatch = next(
        b["accessory"] for b in view["blocks"] if b.get("accessory", {}).get("type") == "button"
    )
    await stack.user.click({**unwatch, "block_id": "home"})
    refused = (await published(stack, 2))[-1].body["view"]
    assert len(await WatchStore(stack.runtime.redis).all()) == 1
    assert "Only the watch admins" in (refused if isinstance(refused, str) else json.dumps(refused))
