"""Every command, button and event is acknowledged within Slack's 3 s, whatever HSS does.

The listeners are read from the Bolt app as served (``ObservedApp.routes``, checked against
Bolt's own list), so a listener added later is driven here too: each is sent signed
requests over HTTP (every action id its constraint matches, with a lookup's, an alert's and
a Home button's value, and junk) while the HSS call budget is spent, and while every HSS
call takes longer than Slack waits.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import SimConfig
from bot.sandbox.slack_requests import Probe, probe_values, probes, send_probe
from bot.sandbox.slack_standin import Scripted
from bot.slack.app import ObservedApp
from bot.slack.lookup_handlers import ACK_WITHIN
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK

TASK = "task-acks"
BIG = "task-acks-big"
#: Slack's limit for every acknowledgement.
SLACK_ACK = 3.0
COMMANDS = [
    f"{TASK} failed",
    f"{BIG}",
    "cold-task running",
    "help",
    "",
    '"t\u200b1" failed',
    "x" * 70,
    f"watch {TASK}",
    "watches all",
    f"mute {TASK} 1h",
    f"unmute {TASK}",
    f"unwatch {TASK}",
    "watch runs auto type=Harbor",
    "mute runs auto 1h",
    "unmute runs",
    "unwatch runs manual",
    "watch",
]


def routes_of(app: ObservedApp) -> list[tuple[str, object]]:
    routes = [(r.kind, r.matches) for r in app.routes]
    # Every listener Bolt holds was registered through the recorded methods.
    assert len(routes) == len(app._async_listeners)
    return routes


#: Longer than Slack waits for an ack.
SLOW_HSS_MS = 4000.0


@pytest.fixture(params=["budget spent", "HSS slow"])
async def stack(
    request: pytest.FixtureRequest, redis: aioredis.Redis, redis_url: str
) -> AsyncIterator[Stack]:
    spent = request.param == "budget spent"
    config = SimConfig(
        ak=TEST_AK,
        sk=TEST_SK,
        project_id=TEST_PROJECT_ID,
        rate_limit=1 if spent else 1000,
        window=60.0,
        task_sizes={TASK: 30, BIG: 1000},
    )
    env = {"HSS_RATE_LIMIT": "1/60s" if spent else "1000/60s", "HSS_FRESH_SECONDS": "0.05"}
    async with local_stack(
        sim_config=config, env=env, redis_url=redis_url, watches=True
    ) as running:
        reply = await running.user.command_text(f"{TASK} failed")  # the one call of the window
        await running.standin.wait_for(lambda cs: any(c.name == reply.response_id for c in cs))
        if not spent:
            running.sim.set_faults(latency_ms=SLOW_HSS_MS)
        yield running


async def test_every_listener_acks_within_three_seconds(stack: Stack) -> None:
    assert stack.slack is not None
    routes = routes_of(stack.slack.app)
    assert {kind for kind, _ in routes} == {"command", "action", "event", "view"}
    channel = stack.user.channel_id
    requests = probes(
        routes,  # type: ignore[arg-type]
        commands=COMMANDS,
        values=lambda action: probe_values(action, TASK, TEST_PROJECT_ID, channel),
    )
    slowest: tuple[float, Probe] | None = None
    for probe in requests:
        reply = await send_probe(stack.user, probe)
        assert reply.status == 200, probe
        assert reply.elapsed < SLACK_ACK, (reply.elapsed, probe)
        if slowest is None or reply.elapsed > slowest[0]:
            slowest = (reply.elapsed, probe)
    assert slowest is not None
    print(f"slowest ack {slowest[0] * 1000:.0f} ms: {slowest[1]}")
    # Show details and Show all did ask for a lookup: it waits after the ack, not in it.
    assert stack.slack.background.running() > 0


# With the budget spent for a minute the answer would come a minute later: HSS slow only.
@pytest.mark.parametrize("stack", ["HSS slow"], indirect=True)
async def test_show_details_answers_after_the_ack(stack: Stack) -> None:
    value = probe_values("hss_alert_details", TASK, TEST_PROJECT_ID, stack.user.channel_id)[2]
    reply = await stack.user.click({"action_id": "hss_alert_details", "value": value})
    assert reply.status == 200 and reply.elapsed < SLACK_ACK
    # The lookup (one slow HSS call) answers through response_url once it is done.
    calls = await stack.standin.wait_for(
        lambda cs: any(c.name == reply.response_id for c in cs), timeout=SLOW_HSS_MS / 1000 + 10
    )
    [answer] = [c for c in calls if c.name == reply.response_id]
    assert TASK in json.dumps(answer.body) and answer.body["replace_original"] is False


async def test_a_command_slower_than_the_ack_window_acks_a_placeholder_then_answers(
    stack: Stack,
) -> None:
    channel = {"ok": True, "channel": {"id": "C0SLOW0001", "is_member": True}}
    # Slack itself is slow to say whether the bot may post in the channel.
    stack.standin.fail_next("conversations.info", Scripted(body=channel, delay=ACK_WITHIN + 0.5))
    reply = await stack.user.command_text(f"watch {TASK}")
    assert reply.status == 200 and reply.elapsed < SLACK_ACK
    assert "Working on it" in json.dumps(reply.body)
    calls = await stack.standin.wait_for(lambda cs: any(c.name == reply.response_id for c in cs))
    [answer] = [c.body for c in calls if c.name == reply.response_id]
    assert "Watching task" in json.dumps(answer) and answer["replace_original"] is True
