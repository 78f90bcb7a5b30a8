"""Replicas end to end: two ``hss-sync-bot run`` processes (HTTP mode, different ports) on one
real Redis, one HSS simulator and one Slack stand-in. A watch is typed into one replica, the
simulator flips registries, and the stand-in's ``chat.postMessage`` / ``chat.update`` calls
show what the channel heard: each flip once, whatever the number of replicas; recoveries in
the thread; unwatch and mute respected; a Slack 429 survived; a SIGKILLed replica's work
taken over (also one killed mid-fetch, holding the task's leases); every replica restarted
without losing a subscription or re-alerting anything. No replica logs a secret or a
traceback.

The outbox paces one message per second per channel in ``run``, so waits are generous."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from bot.lookup import LOCK_TTL
from bot.models import Registry, TaskRef
from bot.sandbox.slack_requests import SlackUser
from bot.sandbox.slack_standin import Call, Scripted, SlackStandIn
from bot.storage import keys
from bot.storage.mirror_store import RedisMirrorStore
from tests.plugins.hss_sim import TEST_PROJECT_ID, TEST_SK, MakeSim, RunningSim
from tests.support import (
    Replica,
    alerts_delivered,
    free_port,
    hss_env,
    refreshes_stored,
    run_bot,
    until,
)

TASK = "task-replicas"
REF = TaskRef(TEST_PROJECT_ID, TASK)
SECRET = "replica-test-signing-secret"
BOT_TOKEN = "xoxb-replica-test-token"
CHANNEL_A = "C0REPLICA1"
CHANNEL_B = "C0REPLICA2"
#: The simulator's limit, and the bot's HSS_RATE_LIMIT: generous, so the budget never paces.
RATE_LIMIT = 1000
#: Long enough for the outbox's 1 message/s per channel, a lease or two to expire, and a
#: killed replica's fetch lock (lookup.LOCK_TTL) should it die mid-fetch.
ALERT_TIMEOUT = 30.0


# --- the processes ------------------------------------------------------------------------


@dataclass
class Cluster:
    """Starts replicas sharing one Redis, simulator and stand-in; stops them all at the end."""

    sim: RunningSim
    standin: SlackStandIn
    redis_url: str
    redis: aioredis.Redis
    data_dir: Path
    http: httpx.AsyncClient
    replicas: list[Replica] = field(default_factory=list)

    def env(self, port: int) -> dict[str, str]:
        return hss_env(
            self.sim.url,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=f"{self.standin.url}/api/",
            HSS_RATE_LIMIT=f"{RATE_LIMIT}/60s",
            POLL_INTERVAL_SECONDS="1",
            REDIS_URL=self.redis_url,
            HSS_DATA_DIR=str(self.data_dir),
            PORT=str(port),
        )

    async def start(self, count: int) -> list[Replica]:
        started = await asyncio.gather(*(self._start_one() for _ in range(count)))
        return list(started)

    async def _start_one(self) -> Replica:
        port = free_port()
        proc = await run_bot(self.env(port))
        replica = Replica(f"replica{len(self.replicas) + 1}", port, proc)
        self.replicas.append(replica)
        replica.start_reading()
        await self._wait_healthy(replica)
        return replica

    async def _wait_healthy(self, replica: Replica) -> None:
        async def healthy() -> bool:
            assert replica.proc.returncode is None, f"{replica.name}:\n{replica.stderr[-3000:]}"
            try:
                response = await self.http.get(f"{replica.url}/healthz", timeout=1.0)
            except httpx.TransportError:
                return False
            return response.status_code == 200 and response.json()["redis"] == "up"

        await until(healthy, timeout=30.0, what=f"{replica.name} healthy")

    def user(self, replica: Replica, channel: str) -> SlackUser:
        """Someone in ``channel`` whose commands reach ``replica``."""
        return SlackUser(
            bot_url=replica.url,
            signing_secret=SECRET,
            response_base=f"{self.standin.url}/response",
            http=self.http,
            user_id="U0REPLICA1",
            channel_id=channel,
        )

    async def aclose(self) -> None:
        for replica in self.replicas:
            await replica.stop(signal.SIGKILL)  # a no-op for those already stopped


@pytest.fixture
async def cluster(
    make_hss_sim: MakeSim,
    standin: SlackStandIn,
    redis_url: str,
    redis: aioredis.Redis,  # flushes the database before and after the test
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    sim = await make_hss_sim(task_sizes={TASK: 30}, rate_limit=RATE_LIMIT, window=60.0)
    async with httpx.AsyncClient(timeout=10.0) as http:
        running = Cluster(sim, standin, redis_url, redis, tmp_path / "data", http)
        try:
            yield running
        finally:
            await running.aclose()
    for replica in running.replicas:
        log = replica.stderr
        for secret in (TEST_SK, SECRET, BOT_TOKEN):
            assert secret not in log, f"{replica.name} logged a secret"
        assert "Traceback" not in log, f"{replica.name}:\n{log[-3000:]}"


# --- what the channel heard ---------------------------------------------------------------


def posts(standin: SlackStandIn, channel: str) -> list[Call]:
    return [c for c in standin.api("chat.postMessage") if c.body.get("channel") == channel]


def updates(standin: SlackStandIn, channel: str) -> list[Call]:
    return [c for c in standin.api("chat.update") if c.body.get("channel") == channel]


def text_of(call: Call) -> str:
    return json.dumps(call.body, ensure_ascii=False)


async def wait_posts(
    standin: SlackStandIn, channel: str, count: int, timeout: float = ALERT_TIMEOUT
) -> list[Call]:
    def enough(calls: list[Call]) -> bool:
        return len([c for c in calls if _is(c, "chat.postMessage", channel)]) >= count

    await standin.wait_for(enough, timeout)
    return posts(standin, channel)


async def wait_updates(standin: SlackStandIn, channel: str, count: int) -> list[Call]:
    def enough(calls: list[Call]) -> bool:
        return len([c for c in calls if _is(c, "chat.update", channel)]) >= count

    await standin.wait_for(enough, ALERT_TIMEOUT)
    return updates(standin, channel)


def _is(call: Call, method: str, channel: str) -> bool:
    return call.kind == "api" and call.name == method and call.body.get("channel") == channel


def calls_made(sim: RunningSim) -> int:
    return sum(sim.sim.calls.values())


async def wait_refreshes(sim: RunningSim, count: int = 1, timeout: float = ALERT_TIMEOUT) -> None:
    """Wait until the replicas have fetched the task ``count`` more times."""
    base = calls_made(sim)
    await until(lambda: calls_made(sim) >= base + count, timeout=timeout, what="a refresh")


async def settle(cluster: Cluster, refreshes: int = 3) -> None:
    """Let ``refreshes`` more refreshes be saved and everything they had to say reach Slack:
    anything that was going to be posted has been by then."""
    base = await refreshes_stored(cluster.redis, REF)

    async def saved() -> bool:
        return await refreshes_stored(cluster.redis, REF) >= base + refreshes

    await until(saved, timeout=ALERT_TIMEOUT, what=f"{refreshes} more refreshes saved")
    await until(
        lambda: alerts_delivered(cluster.redis, REF, (CHANNEL_A, CHANNEL_B)),
        timeout=ALERT_TIMEOUT,
        what="the alerts delivered",
    )


def healthy_registries(sim: RunningSim, count: int) -> list[Registry]:
    return [r for r in sim.sim.registries(TASK) if r.sync_status == "finished"][:count]


async def watch(user: SlackUser, sim: RunningSim) -> None:
    """``/hss-sync watch TASK`` and the first refresh (the baseline, never alerted)."""
    base = calls_made(sim)
    reply = await user.command_text(f"watch {TASK}")
    assert reply.status == 200
    assert "Watching task" in json.dumps(reply.body), reply.body
    await until(lambda: calls_made(sim) > base, timeout=ALERT_TIMEOUT, what="a first refresh")


#: The stand-in's ts of the first message it accepts: every test's first alert.
FIRST_TS = "1700000000.000001"


# --- the tests ----------------------------------------------------------------------------


async def test_each_flip_is_alerted_once_and_its_recovery_goes_to_the_thread(
    cluster: Cluster,
) -> None:
    sim, standin = cluster.sim, cluster.standin
    one, two = await cluster.start(2)
    await watch(cluster.user(one, CHANNEL_A), sim)
    listed = await cluster.user(two, CHANNEL_A).command_text("watches")
    assert TASK in json.dumps(listed.body)  # the other replica knows the watch too

    [victim] = healthy_registries(sim, 1)
    sim.sim.set_status(TASK, victim.registry_id, "failed", "disk full")
    [alert] = await wait_posts(standin, CHANNEL_A, 1)
    assert victim.registry_name in text_of(alert)
    assert "thread_ts" not in alert.body
    await settle(cluster)
    assert len(posts(standin, CHANNEL_A)) == 1
    assert updates(standin, CHANNEL_A) == []

    sim.sim.set_status(TASK, victim.registry_id, "finished")
    thread = (await wait_posts(standin, CHANNEL_A, 2))[1]
    [update] = await wait_updates(standin, CHANNEL_A, 1)
    assert thread.body.get("thread_ts") == FIRST_TS
    assert "recovered" in text_of(thread)
    assert update.body.get("ts") == FIRST_TS
    await settle(cluster)
    assert len(posts(standin, CHANNEL_A)) == 2
    assert len(updates(standin, CHANNEL_A)) == 1


async def test_an_unwatched_channel_hears_nothing_more(cluster: Cluster) -> None:
    sim, standin = cluster.sim, cluster.standin
    one, two = await cluster.start(2)
    # Channel B keeps the task refreshed (and alerted) after channel A unwatches it.
    await watch(cluster.user(one, CHANNEL_A), sim)
    await watch(cluster.user(two, CHANNEL_B), sim)
    first, second = healthy_registries(sim, 2)
    sim.sim.set_status(TASK, first.registry_id, "failed", "boom")
    await wait_posts(standin, CHANNEL_A, 1)
    await wait_posts(standin, CHANNEL_B, 1)

    reply = await cluster.user(two, CHANNEL_A).command_text(f"unwatch {TASK}")
    assert "Stopped watching" in json.dumps(reply.body)
    sim.sim.set_status(TASK, second.registry_id, "failed", "boom again")
    sim.sim.set_status(TASK, first.registry_id, "finished")
    thread = (await wait_posts(standin, CHANNEL_B, 2))[1]
    assert second.registry_name in text_of(thread)
    await settle(cluster)
    assert len(posts(standin, CHANNEL_A)) == 1
    assert updates(standin, CHANNEL_A) == []
    assert len(posts(standin, CHANNEL_B)) == 2


async def test_a_muted_channel_hears_nothing_until_unmuted(cluster: Cluster) -> None:
    sim, standin = cluster.sim, cluster.standin
    one, two = await cluster.start(2)
    await watch(cluster.user(one, CHANNEL_A), sim)
    await watch(cluster.user(two, CHANNEL_B), sim)
    reply = await cluster.user(two, CHANNEL_A).command_text(f"mute {TASK} 1h")
    assert "Muted task" in json.dumps(reply.body)

    first, second = healthy_registries(sim, 2)
    sim.sim.set_status(TASK, first.registry_id, "failed", "boom")
    await wait_posts(standin, CHANNEL_B, 1)
    await settle(cluster)
    assert posts(standin, CHANNEL_A) == []
    assert updates(standin, CHANNEL_A) == []

    reply = await cluster.user(one, CHANNEL_A).command_text(f"unmute {TASK}")
    assert "on again" in json.dumps(reply.body)
    sim.sim.set_status(TASK, second.registry_id, "failed", "boom again")
    [alert] = await wait_posts(standin, CHANNEL_A, 1)
    assert second.registry_name in text_of(alert)
    await settle(cluster)
    assert len(posts(standin, CHANNEL_A)) == 1
    assert len(posts(standin, CHANNEL_B)) == 2  # its alert, and the second failure's line


async def test_a_429_from_slack_delays_the_alert_and_it_still_arrives_once(
    cluster: Cluster,
) -> None:
    sim, standin = cluster.sim, cluster.standin
    replicas = await cluster.start(2)
    await watch(cluster.user(replicas[0], CHANNEL_A), sim)
    standin.fail_next(
        "chat.postMessage",
        Scripted(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}),
    )
    [victim] = healthy_registries(sim, 1)
    sim.sim.set_status(TASK, victim.registry_id, "failed", "boom")
    await wait_posts(standin, CHANNEL_A, 1)  # answered 429
    refused_at = time.monotonic()
    refused, delivered = await wait_posts(standin, CHANNEL_A, 2)
    assert time.monotonic() - refused_at >= 0.9  # Retry-After: 1, whichever replica retried
    assert refused.body["text"] == delivered.body["text"]
    assert victim.registry_name in text_of(delivered)
    assert any("rate limited" in r.stderr for r in replicas)

    sim.sim.set_status(TASK, victim.registry_id, "finished")
    thread = (await wait_posts(standin, CHANNEL_A, 3))[2]
    assert thread.body.get("thread_ts") == FIRST_TS  # the delivered post is the parent
    await settle(cluster)
    assert len(posts(standin, CHANNEL_A)) == 3
    assert len(updates(standin, CHANNEL_A)) == 1


@pytest.mark.timeout(120)
async def test_a_killed_replica_is_taken_over(cluster: Cluster) -> None:
    sim, standin = cluster.sim, cluster.standin
    doomed, survivor = await cluster.start(2)
    await watch(cluster.user(doomed, CHANNEL_A), sim)
    first, second = healthy_registries(sim, 2)
    sim.sim.set_status(TASK, first.registry_id, "failed", "boom")
    await wait_posts(standin, CHANNEL_A, 1)
    await settle(cluster, refreshes=2)

    # Killed with a flip in flight: it may be refreshing, alerting or holding leases.
    sim.sim.set_status(TASK, second.registry_id, "failed", "boom again")
    assert await doomed.stop(signal.SIGKILL) == -signal.SIGKILL
    thread = (await wait_posts(standin, CHANNEL_A, 2))[1]
    assert second.registry_name in text_of(thread)
    assert thread.body.get("thread_ts") == FIRST_TS
    await wait_updates(standin, CHANNEL_A, 1)

    await wait_refreshes(sim, 3)  # the survivor keeps the task fresh
    sim.sim.set_status(TASK, first.registry_id, "finished")
    sim.sim.set_status(TASK, second.registry_id, "finished")
    recovered = (await wait_posts(standin, CHANNEL_A, 3))[2]
    assert "recovered" in text_of(recovered)
    await wait_updates(standin, CHANNEL_A, 2)
    await settle(cluster)
    assert len(posts(standin, CHANNEL_A)) == 3
    assert len(updates(standin, CHANNEL_A)) == 2
    assert survivor.proc.returncode is None


@pytest.mark.timeout(120)
async def test_restarting_every_replica_loses_no_watch_and_realerts_nothing(
    cluster: Cluster,
) -> None:
    sim, standin = cluster.sim, cluster.standin
    old = await cluster.start(2)
    await watch(cluster.user(old[0], CHANNEL_A), sim)
    first, second = healthy_registries(sim, 2)
    sim.sim.set_status(TASK, first.registry_id, "failed", "boom")
    await wait_posts(standin, CHANNEL_A, 1)
    await settle(cluster, refreshes=2)

    codes = await asyncio.gather(*(r.stop(signal.SIGTERM) for r in old))
    assert codes == [0, 0]
    new = await cluster.start(2)
    listed = await cluster.user(new[1], CHANNEL_A).command_text("watches")
    assert TASK in json.dumps(listed.body)
    await settle(cluster, refreshes=3)  # the new replicas refresh: the same data, no news
    assert len(posts(standin, CHANNEL_A)) == 1
    assert updates(standin, CHANNEL_A) == []

    sim.sim.set_status(TASK, second.registry_id, "failed", "boom again")
    thread = (await wait_posts(standin, CHANNEL_A, 2))[1]
    assert second.registry_name in text_of(thread)
    assert thread.body.get("thread_ts") == FIRST_TS  # the old incident, carried over
    [update] = await wait_updates(standin, CHANNEL_A, 1)
    assert update.body.get("ts") == FIRST_TS
    await settle(cluster)
    assert len(posts(standin, CHANNEL_A)) == 2
    assert len(updates(standin, CHANNEL_A)) == 1


@pytest.mark.timeout(120)
async def test_a_replica_killed_mid_refresh_is_taken_over(cluster: Cluster) -> None:
    sim, standin = cluster.sim, cluster.standin
    [doomed] = await cluster.start(1)
    await watch(cluster.user(doomed, CHANNEL_A), sim)
    await wait_refreshes(sim, 1)
    # Slow answers, so the next refresh is still in flight when its replica dies: it holds
    # the task's scheduler lease and the fetch lock. Only ``doomed`` can be fetching.
    sim.sim.set_faults(latency_ms=8000)
    await wait_refreshes(sim, 1)
    fetch_started = time.monotonic()
    [survivor] = await cluster.start(1)
    [victim] = healthy_registries(sim, 1)
    sim.sim.set_status(TASK, victim.registry_id, "failed", "boom")
    assert await doomed.stop(signal.SIGKILL) == -signal.SIGKILL
    killed_at = time.monotonic()
    assert killed_at - fetch_started < 7.0, "the fetch was over before the kill"
    sim.sim.set_faults(latency_ms=0)

    # The dead replica's fetch lock (lookup.LOCK_TTL), not its 1 s scheduler lease,
    # bounds the takeover at this short poll interval (see bot.alerting.scheduler's docstring).
    [alert] = await wait_posts(standin, CHANNEL_A, 1, timeout=LOCK_TTL + 15.0)
    takeover = time.monotonic() - killed_at
    assert victim.registry_name in text_of(alert)
    assert takeover < LOCK_TTL + 10.0, f"taken over after {takeover:.1f} s"
    await settle(cluster)
    assert len(posts(standin, CHANNEL_A)) == 1
    assert survivor.proc.returncode is None


@pytest.mark.timeout(120)
async def test_sigterm_during_a_refresh_finishes_it_and_loses_no_alert(
    cluster: Cluster, redis: aioredis.Redis
) -> None:
    sim, standin = cluster.sim, cluster.standin
    [stopping] = await cluster.start(1)
    await watch(cluster.user(stopping, CHANNEL_A), sim)
    await wait_refreshes(sim, 1)
    # Slow answers, and a flip that every call arriving from now on reports.
    sim.sim.set_faults(latency_ms=3000)
    [victim] = healthy_registries(sim, 1)
    sim.sim.set_status(TASK, victim.registry_id, "failed", "disk full")
    await wait_refreshes(sim, 1)
    call_arrived = time.monotonic()

    stopping.proc.send_signal(signal.SIGTERM)
    # While it finishes the refresh it still listens, and tells load balancers to look away.
    ready = await cluster.http.get(f"{stopping.url}/readyz", timeout=2.0)
    while ready.status_code == 200 and time.monotonic() - call_arrived < 2.0:
        await asyncio.sleep(0.02)  # the signal is handled between two requests
        ready = await cluster.http.get(f"{stopping.url}/readyz", timeout=2.0)
    code = await stopping.stop(signal.SIGTERM)
    stopped_after = time.monotonic() - call_arrived

    assert ready.status_code == 503
    assert "shutting down" in ready.json()["reasons"]
    assert code == 0
    assert stopped_after < 10.0, f"took {stopped_after:.1f} s to stop"
    # The refresh in flight was finished and saved, not abandoned, and its lease is free.
    snap = await RedisMirrorStore(redis).load(REF)
    assert snap.rows[victim.registry_id].status == "failed"
    assert await redis.exists(keys.scheduler_lease(REF)) == 0
    # Whether the stopping replica posted the alert or left it queued, it arrives once.
    sim.sim.set_faults(latency_ms=0)
    await cluster.start(1)
    [alert] = await wait_posts(standin, CHANNEL_A, 1)
    assert victim.registry_name in text_of(alert)
    await settle(cluster)
    assert len(posts(standin, CHANNEL_A)) == 1
