"""Following sync runs end to end: the simulator over HTTP with its clock in the test's hand,
a real Redis, the follower's rounds driven one by one on the same clock, the real outbox
sending to the Slack stand-in. Baseline, new / still failing / recovered, an update while a
run goes on and its end in the thread, all recovered, stuck, missed, two replicas, and HSS
faults that delay an alert without losing it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from bot.alerting.outbox import OutboxSender, web_client
from bot.alerting.run_follower import Pace, RunFollower
from bot.config import Settings
from bot.hss.budget import Priority
from bot.runs import RunKind
from bot.runtime import Runtime, open_runtime
from bot.sandbox.localstack import local_stack
from bot.sandbox.simulator import SimConfig
from bot.sandbox.slack_requests import button_labelled
from bot.sandbox.slack_standin import Call, SlackStandIn
from bot.slack.render import Message
from bot.storage import keys
from bot.storage.run_watch_store import RunWatch, RunWatchStore
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, MakeSim, RunningSim, SimClock
from tests.support import check_message, until

CHANNEL = "C0RUNS001"
OTHER = "C0RUNS002"
POLL = 60.0
PACE = Pace(poll=POLL, stuck_after=300.0, missed_after=500.0)
#: Generous budgets with short windows: a 429 holds an API for one window (no Retry-After).
FAST = {"HSS_RATE_LIMIT": "100/1s", "HSS_TASKS_RATE_LIMIT": "100/1s"}
OURS = re.compile(r"<!date\^\d+\^[^|>]*\|[^>]*>")
HEADER = re.compile(r"Sync run: (\d+) new, (\d+) still failing, (\d+) recovered")


# --- the deployment -------------------------------------------------------------------------


@dataclass
class Replica:
    runtime: Runtime
    follower: RunFollower
    sender: OutboxSender


@dataclass
class World:
    sim: RunningSim
    clock: SimClock
    watches: RunWatchStore
    slack: SlackStandIn
    redis: aioredis.Redis
    replicas: list[Replica] = field(default_factory=list)

    @property
    def follower(self) -> RunFollower:
        return self.replicas[0].follower

    async def start_run(self, kind: str = "auto", duration: float = 100.0) -> str:
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                f"{self.sim.url}/_sim/run", json={"kind": kind, "duration": duration}
            )
        assert answer.status_code == 200, answer.text
        task_id: str = answer.json()["run"]["task_id"]
        return task_id

    async def watch(
        self, kind: RunKind | None = RunKind.AUTO, channel: str = CHANNEL, **kw: Any
    ) -> None:
        watch = RunWatch(
            channel=channel, kind=kind, created_by="U0WATCHER", created_at=self.clock.now, **kw
        )
        _, created = await self.watches.add(watch)
        assert created

    async def round(self, advance: float = POLL) -> int | None:
        self.clock.advance(advance)
        return await self.follower.run_once()

    async def deliver(self) -> None:
        sender = self.replicas[0].sender

        async def drained() -> bool:
            await sender.run_once()
            return not await self.redis.smembers(keys.outbox_channels())

        await until(drained, what="the outbox drained")

    def follower_rounds(self) -> int:
        """List calls the simulator answered: one per round."""
        return sum(self.sim.sim.apis["tasks"].calls.values())

    def with_status(self, task_id: str, status: str) -> set[str]:
        return {r.registry_id for r in self.sim.sim.registries(task_id) if r.sync_status == status}

    def failed(self, task_id: str) -> set[str]:
        return self.with_status(task_id, "failed")

    def names(self, ids: set[str], task_id: str) -> set[str]:
        return {r.registry_name for r in self.sim.sim.registries(task_id) if r.registry_id in ids}

    def posts(self, channel: str = CHANNEL) -> list[Call]:
        return [
            c
            for c in self.slack.api("chat.postMessage")
            if c.body.get("channel") == channel and not c.body.get("thread_ts")
        ]

    def replies(self, channel: str = CHANNEL) -> list[Call]:
        return [
            c
            for c in self.slack.api("chat.postMessage")
            if c.body.get("channel") == channel and c.body.get("thread_ts")
        ]

    def updates(self, channel: str = CHANNEL) -> list[Call]:
        return [c for c in self.slack.api("chat.update") if c.body.get("channel") == channel]


MakeWorld = Callable[..., Awaitable[World]]


def everything(call: Call) -> str:
    return f"{call.body.get('text', '')}\n{call.body.get('blocks', '')}"


@pytest.fixture
async def make_world(
    make_hss_sim: MakeSim, redis: aioredis.Redis, redis_url: str, standin: SlackStandIn
) -> AsyncIterator[MakeWorld]:
    async with AsyncExitStack() as exits:

        async def make(replicas: int = 1, **sim_config: Any) -> World:
            clock = SimClock()
            config = {
                "run_every": None,
                "run_registries": 40,
                "run_failure_rate": 0.25,
                "run_duration": 100.0,
                **sim_config,
            }
            sim = await make_hss_sim(clock=clock, **config)
            world = World(
                sim=sim,
                clock=clock,
                watches=RunWatchStore(redis, clock=clock),
                slack=standin,
                redis=redis,
            )
            for _ in range(replicas):
                settings = Settings.from_env(
                    {
                        "CLOUD_SDK_AK": TEST_AK,
                        "CLOUD_SDK_SK": TEST_SK,
                        "HSS_PROJECT_ID": TEST_PROJECT_ID,
                        "HSS_ENDPOINT": sim.url,
                        "REDIS_URL": redis_url,
                        **FAST,
                    }
                )
                runtime = await open_runtime(settings, clock=clock)
                exits.push_async_callback(runtime.aclose)
                follower = RunFollower(
                    runtime.redis,
                    runs=runtime.runs,
                    watches=world.watches,
                    lookups=runtime.lookups,
                    pace=PACE,
                    clock=clock,
                )
                slack = web_client(token="xoxb-test", base_url=f"{standin.url}/api/")

                async def permanent(channel: str, reason: str) -> None:
                    raise AssertionError(f"{channel} parked: {reason}")

                sender = OutboxSender(
                    runtime.redis, slack=slack, on_permanent=permanent, min_interval=0.0
                )
                world.replicas.append(Replica(runtime, follower, sender))
            return world

        yield make


# --- baseline, new / still failing / recovered --------------------------------------------------


async def test_runs_before_the_watch_are_baseline_and_a_new_run_is_compared_with_the_last(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    before = await world.start_run()
    world.clock.advance(150)  # the run before the watch has ended, with failures
    assert world.failed(before)
    await world.watch()
    assert await world.round() == 0  # the baseline: nothing to say about it
    run = await world.start_run()
    world.clock.advance(150)
    assert await world.round() == 2  # the alert, and its end in the thread
    await world.deliver()

    now, last = world.failed(run), world.failed(before)
    new, still, recovered = now - last, now & last, last - now
    assert new and still and recovered, "the seed gives all three kinds"
    (post,) = world.posts()
    shown = HEADER.search(everything(post))
    assert shown is not None
    assert tuple(map(int, shown.groups())) == (len(new), len(still), len(recovered))
    text = everything(post)
    for name in world.names(new, run):
        assert re.search(rf"`{re.escape(name)}`[^\n\"]*\*new\*", text), name
    for name in world.names(still, run):
        assert re.search(rf"`{re.escape(name)}`[^\n\"]*still failing", text), name
    assert run in text and "scheduled" in text
    (end,) = world.replies()
    assert end.body["thread_ts"] == post.answer["ts"] and "Run ended: finished" in end.body["text"]
    assert await world.round() == 0  # said once
    await world.deliver()
    assert len(world.slack.api("chat.postMessage")) == 2


async def test_failures_while_a_run_goes_on_update_its_message_and_its_end_goes_to_the_thread(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    before = await world.start_run()
    world.clock.advance(150)
    await world.watch()
    run = await world.start_run(duration=200.0)
    await world.round(advance=100)  # half way
    await world.deliver()
    early, last = world.failed(run), world.failed(before)
    # Recovered so far: failed last time, and seen finishing in this run already.
    recovered = last & world.with_status(run, "finished")
    assert early and recovered, "the seed fails and recovers some in the first half"
    (post,) = world.posts()
    assert "running 50%" in everything(post)
    shown = HEADER.search(everything(post))
    assert shown is not None
    assert tuple(map(int, shown.groups())) == (
        len(early - last),
        len(early & last),
        len(recovered),
    )
    await world.round(advance=150)  # ended
    await world.deliver()
    later = world.failed(run) - early
    assert later, "and some in the second half"
    updates = world.updates()
    assert updates and all(u.body["ts"] == post.answer["ts"] for u in updates)
    assert "finished" in everything(updates[-1])
    replies = world.replies()
    assert all(r.body["thread_ts"] == post.answer["ts"] for r in replies)
    assert "more failed" in replies[0].body["text"] and "Run ended" in replies[-1].body["text"]
    assert len(world.posts()) == 1


async def test_a_clean_run_posts_only_when_it_recovered_everything(make_world: MakeWorld) -> None:
    world = await make_world()
    await world.start_run()
    world.clock.advance(150)
    await world.watch()
    run = await world.start_run(duration=0.0)
    async with httpx.AsyncClient() as http:
        for rid in world.failed(run):  # a run in which every earlier failure finished
            await http.post(
                f"{world.sim.url}/_sim/flip",
                json={"task_id": run, "registry": rid, "status": "finished"},
            )
    assert not world.failed(run)
    await world.round()
    await world.deliver()
    (post,) = world.posts()
    assert "All recovered" in everything(post) and "all recovered" in post.body["text"]
    clean = await world.start_run(duration=0.0)  # the previous run failed nothing
    async with httpx.AsyncClient() as http:
        for rid in world.failed(clean):
            await http.post(
                f"{world.sim.url}/_sim/flip",
                json={"task_id": clean, "registry": rid, "status": "finished"},
            )
    assert await world.round() == 0
    await world.deliver()
    assert len(world.posts()) == 1


# --- stuck and missed ---------------------------------------------------------------------------


async def test_a_run_that_does_not_move_is_said_to_be_stuck_once(make_world: MakeWorld) -> None:
    world = await make_world()
    await world.watch(kind=None)
    run = await world.start_run(kind="manual", duration=1e9)  # it never gets anywhere
    for _ in range(4):
        await world.round()
    await world.deliver()
    assert world.posts() == []
    for _ in range(4):
        await world.round()
    await world.deliver()
    (notice,) = world.posts()
    assert "stuck" in notice.body["text"] and run in everything(notice)


async def test_a_missing_scheduled_run_is_said_once(make_world: MakeWorld) -> None:
    world = await make_world()
    await world.watch()
    await world.watch(kind=RunKind.MANUAL, channel=OTHER)  # only scheduled runs are expected
    for _ in range(8):
        await world.round()
    await world.deliver()
    assert world.posts() == []
    for _ in range(4):
        await world.round()
    await world.deliver()
    (notice,) = world.posts()
    assert "missed" in notice.body["text"]
    assert world.posts(OTHER) == []


# --- replicas and faults --------------------------------------------------------------------


async def test_two_replicas_alert_a_run_once(make_world: MakeWorld) -> None:
    world = await make_world(replicas=2)
    await world.start_run()
    world.clock.advance(150)
    await world.watch()
    await world.watch(channel=OTHER)
    await world.start_run()
    world.clock.advance(150)
    one, two = world.replicas
    results = await asyncio.gather(one.follower.run_once(), two.follower.run_once())
    assert sorted(results, key=str) == [4, None]  # one round: two items for each channel
    # Even rounds on the same list at once (a lease lost mid-round) queue each item once.
    snap = await one.runtime.runs.refresh(priority=Priority.BACKGROUND)
    again = await asyncio.gather(
        one.follower.follow(snap, await world.watches.all()),
        two.follower.follow(snap, await world.watches.all()),
    )
    assert again == [0, 0]
    await world.deliver()
    assert len(world.posts()) == 1 and len(world.posts(OTHER)) == 1
    assert len(world.replies()) == 1 and len(world.replies(OTHER)) == 1


async def test_hss_faults_delay_an_alert_and_lose_nothing(make_world: MakeWorld) -> None:
    world = await make_world()
    await world.start_run()
    world.clock.advance(150)
    await world.watch()
    await world.start_run()
    world.clock.advance(150)
    world.sim.sim.queue(429, 503, 503, 503)  # the list fails, retries included
    assert await world.round() is None
    world.sim.sim.queue("ok", 429, 503, 503, 503)  # the list works, the failed view does not
    assert await world.round() == 0
    await world.deliver()
    assert world.posts() == []
    assert await world.round() == 2
    await world.deliver()
    assert len(world.posts()) == 1 and len(world.replies()) == 1


# --- hostile names, and the loop itself -------------------------------------------------------


async def test_names_from_hss_reach_slack_escaped(make_world: MakeWorld) -> None:
    world = await make_world(hostile=True)
    await world.start_run()
    world.clock.advance(150)
    await world.watch()
    for _ in range(3):  # the simulator gives every third run a hostile name
        await world.start_run()
        world.clock.advance(150)
    await world.round()
    await world.deliver()
    calls = world.slack.api("chat.postMessage")
    assert len(world.posts()) == 3
    assert any("&lt;" in everything(c) for c in calls), "something hostile was shown"
    for call in calls:
        check_message(Message(text=call.body["text"], blocks=call.body["blocks"]), OURS)


async def test_replicas_loops_follow_runs_and_alert_once(make_world: MakeWorld) -> None:
    world = await make_world(replicas=2)
    await world.start_run()
    world.clock.advance(150)
    await world.watch()
    run = await world.start_run()
    world.clock.advance(150)
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(worker.run(stop))
        for replica in world.replicas
        for worker in (replica.follower, replica.sender)
    ]
    try:
        await world.slack.wait_for(lambda _: len(world.replies()) == 1, timeout=15)
        world.clock.advance(POLL)  # another round each, with nothing new to say
        await until(lambda: world.follower_rounds() >= 2, timeout=15, what="a second round")
    finally:
        stop.set()
        await asyncio.gather(*loops)
    assert len(world.posts()) == 1 and run in everything(world.posts()[0])
    assert len(world.replies()) == 1


# --- the whole bot: the slash command, the workers, the simulator's runs ------------------------


async def test_watch_runs_from_slack_then_a_new_run_is_alerted_with_its_end(redis_url: str) -> None:
    config = SimConfig(
        ak=TEST_AK,
        sk=TEST_SK,
        project_id=TEST_PROJECT_ID,
        rate_limit=1000,
        run_every=None,
        run_registries=30,
        run_failure_rate=0.3,
    )
    env = {"TASKS_POLL_SECONDS": "1", **FAST}
    async with local_stack(
        sim_config=config, env=env, redis_url=redis_url, watches=True, send_interval=0.05
    ) as stack:
        stack.sim.start_run("auto", duration=0.0)  # before the watch: the baseline
        reply = await stack.user.command_text("watch runs auto")
        assert reply.status == 200
        assert stack.workers is not None
        store = stack.workers.run_watches
        await until(store.all, what="the run watch stored")
        channel = stack.user.channel_id
        run = stack.sim.start_run("auto", duration=0.5)

        def alerted(calls: list[Call]) -> bool:
            return any(
                c.name == "chat.postMessage"
                and c.body.get("thread_ts")
                and "Run ended" in c.body.get("text", "")
                for c in calls
            )

        calls = await stack.standin.wait_for(alerted, timeout=20)
        posts = [
            c
            for c in calls
            if c.name == "chat.postMessage"
            and c.body.get("channel") == channel
            and HEADER.search(everything(c))
        ]
        assert len(posts) == 1 and run.task_id in everything(posts[0])
        assert "still failing" in everything(posts[0]) or "*new*" in everything(posts[0])

        # Its buttons: Acknowledge shows who; Mute mutes the run watch it came through.
        post = posts[0]
        ts = post.answer["ts"]

        async def click(label: str) -> Call:
            seen = len(stack.standin.api("chat.update"))
            latest = stack.standin.api("chat.update")[-1].body if seen else post.body
            target = button_labelled(latest, label)
            reply = await stack.user.click(target, channel_id=channel, message_ts=ts)
            assert reply.status == 200
            await stack.standin.wait_for(lambda _: len(stack.standin.api("chat.update")) > seen)
            update = stack.standin.api("chat.update")[-1]
            assert update.body["ts"] == ts
            return update

        acked = await click("Acknowledge")
        assert f"Acknowledged by <@{stack.user.user_id}>" in everything(acked)
        muted = await click("Mute 1 h")
        assert "Muted until" in everything(muted) and "Unmute" in everything(muted)
        watch = await store.get(channel=channel, kind=RunKind.AUTO)
        assert watch is not None and watch.muted_until is not None
        unmuted = await click("Unmute")
        assert "Muted until" not in everything(unmuted) and "Acknowledged by" in everything(unmuted)
        watch = await store.get(channel=channel, kind=RunKind.AUTO)
        assert watch is not None and watch.muted_until is None


# --- changes that land while a round goes on ----------------------------------------------------


async def test_a_watch_removed_or_muted_during_a_round_is_told_nothing(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    await world.start_run()
    world.clock.advance(150)
    await world.watch()
    await world.watch(channel=OTHER)
    await world.start_run()
    world.clock.advance(150)
    snap = await world.replicas[0].runtime.runs.refresh(priority=Priority.BACKGROUND)
    read = await world.watches.all()  # what the round read; a round can wait minutes for slots
    assert await world.watches.remove(channel=CHANNEL, kind=RunKind.AUTO) is not None
    until_then = world.clock.now + 3600
    assert await world.watches.mute(channel=OTHER, kind=RunKind.AUTO, until=until_then)
    assert await world.follower.follow(snap, read) == 0
    await world.deliver()
    assert world.posts() == [] and world.posts(OTHER) == []
