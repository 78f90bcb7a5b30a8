"""Watches end to end in one process: a watch typed in Slack, the scheduler refreshing the
task through the budget, a registry flipping in the simulator, the alert posted through the
outbox to the Slack stand-in, the recovery in its thread, and the buttons."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.alerting.message import ACTION_ACK, ACTION_MUTE_1H
from bot.models import TaskRef
from bot.sandbox.localstack import Stack
from bot.sandbox.slack_requests import button
from bot.sandbox.slack_standin import Call, Scripted
from bot.storage.run_watch_store import RunWatch
from tests.plugins.hss_sim import TEST_PROJECT_ID
from tests.support import alerting_stack, alerts_delivered, change_stored, until

TASK = "task-alerts"
REF = TaskRef(TEST_PROJECT_ID, TASK)


@pytest.fixture
async def stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[Stack]:
    async with alerting_stack(redis_url, TASK) as running:
        yield running


def posts(stack: Stack, channel: str) -> list[Call]:
    return [c for c in stack.standin.api("chat.postMessage") if c.body.get("channel") == channel]


def text_of(call: Call) -> str:
    return json.dumps(call.body, ensure_ascii=False)


async def wait_calls(stack: Stack, method: str, count: int, timeout: float = 15.0) -> list[Call]:
    await stack.standin.wait_for(
        lambda cs: len([c for c in cs if c.kind == "api" and c.name == method]) >= count, timeout
    )
    return stack.standin.api(method)


def blocks_message(call: Call) -> dict[str, Any]:
    blocks = call.body.get("blocks")
    return {"blocks": json.loads(blocks) if isinstance(blocks, str) else blocks}


async def test_a_flip_is_alerted_once_and_its_recovery_goes_to_the_thread(stack: Stack) -> None:
    channel = stack.user.channel_id
    reply = await stack.user.command_text(f"watch {TASK}")
    assert "Watching task" in json.dumps(reply.body)
    # The scheduler's first refresh is the baseline: existing failures are not alerted.
    baseline_failed = [r for r in stack.sim.registries(TASK) if r.sync_status == "failed"]
    victim = next(r for r in stack.sim.registries(TASK) if r.sync_status == "finished")
    await _until_refreshed(stack)
    stack.sim.set_status(TASK, victim.registry_id, "failed", "disk <full> & <!channel>")

    [alert] = await wait_calls(stack, "chat.postMessage", 1)
    assert alert.body["channel"] == channel
    body = text_of(alert)
    assert victim.registry_name in body
    assert "<!channel>" not in body and "&lt;full&gt;" in body
    assert not any(r.registry_name in body for r in baseline_failed)

    stack.sim.set_status(TASK, victim.registry_id, "finished")
    await wait_calls(stack, "chat.postMessage", 2)
    await wait_calls(stack, "chat.update", 1)
    thread = posts(stack, channel)[1]
    assert thread.body.get("thread_ts") == "1700000000.000001"
    assert "recovered" in text_of(thread)
    assert len(posts(stack, channel)) == 2  # one alert and one thread line, nothing twice

    click = await stack.user.click(button(blocks_message(alert), ACTION_ACK))
    assert click.status == 200
    updates = await wait_calls(stack, "chat.update", 2)
    assert stack.user.user_id in text_of(updates[-1])


async def test_a_muted_watch_posts_nothing(stack: Stack, redis: aioredis.Redis) -> None:
    await stack.user.command_text(f"watch {TASK}")
    await stack.user.command_text(f"mute {TASK} 1h")
    await _until_refreshed(stack)
    victim = next(r for r in stack.sim.registries(TASK) if r.sync_status == "finished")
    stack.sim.set_status(TASK, victim.registry_id, "failed", "boom")
    # The flip is in the mirror and the alerting has handled it: an alert would be in Slack.
    await until(lambda: change_stored(redis, REF, victim.registry_id, "failed"), what="the flip")
    await until(lambda: alerts_delivered(redis, REF, [stack.user.channel_id]), what="alerting")
    assert stack.standin.api("chat.postMessage") == []


async def test_mute_button_mutes_the_watch(stack: Stack) -> None:
    await stack.user.command_text(f"watch {TASK}")
    await _until_refreshed(stack)
    victim = next(r for r in stack.sim.registries(TASK) if r.sync_status == "finished")
    stack.sim.set_status(TASK, victim.registry_id, "failed", "boom")
    [alert] = await wait_calls(stack, "chat.postMessage", 1)
    await stack.user.click(button(blocks_message(alert), ACTION_MUTE_1H))
    update = (await wait_calls(stack, "chat.update", 1))[-1]
    assert "Muted until" in text_of(update) or "muted until" in text_of(update).lower()
    assert stack.workers is not None
    [watch] = await stack.workers.watches.of_channel(stack.user.channel_id)
    assert watch.muted_until is not None


async def _until_refreshed(stack: Stack) -> None:
    """Wait until the scheduler has fetched the task once more (a registries call: the run
    follower's list calls are the other API's)."""
    fetched = stack.sim.apis["registries"].calls
    base = sum(fetched.values())
    await until(lambda: sum(fetched.values()) > base, timeout=15.0, what="a refresh")


async def test_a_channel_the_bot_left_pauses_the_watch_until_watched_again(stack: Stack) -> None:
    await stack.user.command_text(f"watch {TASK}")
    # Run watches of that channel pause with its task watches; another channel's do not.
    await stack.user.command_text("watch runs auto")
    assert stack.workers is not None
    # Made now: the runs the simulator has are its baseline, so it posts nothing here.
    other = RunWatch(channel="C0OTHER001", kind=None, created_by="U1", created_at=time.time())
    await stack.workers.run_watches.add(other)
    await _until_refreshed(stack)
    stack.standin.fail_next(
        "chat.postMessage", Scripted(body={"ok": False, "error": "not_in_channel"})
    )
    victim = next(r for r in stack.sim.registries(TASK) if r.sync_status == "finished")
    stack.sim.set_status(TASK, victim.registry_id, "failed", "boom")
    await wait_calls(stack, "chat.postMessage", 1)  # refused by Slack
    assert stack.workers is not None
    watches = stack.workers.watches

    async def paused() -> bool:
        return any(w.paused_reason for w in await watches.of_channel(stack.user.channel_id))

    await until(paused, what="the watch paused")
    [watch] = await watches.of_channel(stack.user.channel_id)
    assert watch.paused_reason == "not_in_channel"
    paused_runs = {w.channel: w.paused_reason for w in await stack.workers.run_watches.all()}
    assert paused_runs == {stack.user.channel_id: "not_in_channel", "C0OTHER001": None}
    listed = json.dumps((await stack.user.command_text("watches")).body)
    assert listed.count("paused (not_in_channel)") == 4  # text and blocks, two watches each
    await stack.user.command_text(f"watch {TASK}")  # someone invited the bot back
    delivered = await wait_calls(stack, "chat.postMessage", 2)
    assert victim.registry_name in text_of(delivered[-1])
