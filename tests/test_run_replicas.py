"""Runs followed by replicas end to end: two ``hss-sync-bot run`` processes (HTTP mode) on one
real Redis, the HSS simulator serving sync runs (a short run, the budgets' real 5 calls per
window rule on a 2 s window, and ``TASKS_POLL_SECONDS=1``), and the Slack stand-in.

``watch runs auto`` is typed into one replica as a signed slash command; then a scheduled run
with failures starts (``POST /_sim/run``). The channel hears one alert for it, whichever
replica follows, and its end once in the thread, even when the replica holding the
follower's lease is SIGKILLed in the middle of a round while the run goes on. Each replica
reaches the simulator through its own door (``tests.support.SimDoor``), so a slowed answer
shows which replica is inside a round. Both budgets show in ``/metrics`` by API, and HSS
answered no call with 429."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from bot.alerting.run_state import read_seen
from bot.models import TaskRef
from bot.sandbox.slack_requests import SlackUser
from bot.sandbox.slack_standin import Call, SlackStandIn
from bot.storage import keys
from tests.plugins.hss_sim import TEST_PROJECT_ID, TEST_SK, MakeSim, RunningSim
from tests.support import (
    Replica,
    SimDoor,
    free_port,
    hss_env,
    metric,
    open_door,
    run_bot,
    until,
)

SECRET = "run-replica-test-signing-secret"
BOT_TOKEN = "xoxb-run-replica-test-token"
CHANNEL = "C0RUNREPL1"
#: HSS's rule, 5 calls per window and API, on a compressed window: the simulator enforces
#: it and both of the bot's budgets keep to it.
CALLS, WINDOW = 5, 2.0
#: The followed run's length: long enough to be alerted, lose a replica and be taken over
#: (the follower's lease, the run list's lock and the outbox's lease expire) before it ends.
RUN_SECONDS = 12.0
HEADER = re.compile(r"Sync run: (\d+) new, (\d+) still failing, (\d+) recovered")
WAIT = 25.0


@dataclass
class RunCluster:
    sim: RunningSim
    standin: SlackStandIn
    redis_url: str
    redis: aioredis.Redis
    data_dir: Path
    http: httpx.AsyncClient
    replicas: list[Replica] = field(default_factory=list)
    doors: dict[str, SimDoor] = field(default_factory=dict)

    async def start(self, count: int) -> list[Replica]:
        return list(await asyncio.gather(*(self._start_one(i) for i in range(count))))

    async def _start_one(self, index: int) -> Replica:
        door = await open_door(self.sim.sim)
        port = free_port()
        env = hss_env(
            door.url,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=f"{self.standin.url}/api/",
            HSS_RATE_LIMIT=f"{CALLS}/{WINDOW:g}s",
            HSS_TASKS_RATE_LIMIT=f"{CALLS}/{WINDOW:g}s",
            TASKS_POLL_SECONDS="1",
            REDIS_URL=self.redis_url,
            HSS_DATA_DIR=str(self.data_dir),
            PORT=str(port),
        )
        replica = Replica(f"replica{index + 1}", port, await run_bot(env))
        self.replicas.append(replica)
        self.doors[replica.name] = door
        replica.start_reading()

        async def healthy() -> bool:
            assert replica.proc.returncode is None, f"{replica.name}:\n{replica.stderr[-3000:]}"
            try:
                response = await self.http.get(f"{replica.url}/healthz", timeout=1.0)
            except httpx.TransportError:
                return False
            return response.status_code == 200 and response.json()["redis"] == "up"

        await until(healthy, timeout=30.0, what=f"{replica.name} healthy")
        return replica

    def user(self, replica: Replica) -> SlackUser:
        return SlackUser(
            bot_url=replica.url,
            signing_secret=SECRET,
            response_base=f"{self.standin.url}/response",
            http=self.http,
            user_id="U0RUNREPL1",
            channel_id=CHANNEL,
        )

    async def aclose(self) -> None:
        for replica in self.replicas:
            await replica.stop(signal.SIGKILL)  # a no-op for those already stopped
        for door in self.doors.values():
            await door.aclose()


@pytest.fixture
async def cluster(
    make_hss_sim: MakeSim,
    standin: SlackStandIn,
    redis_url: str,
    redis: aioredis.Redis,  # flushes the database before and after the test
    tmp_path: Path,
) -> AsyncIterator[RunCluster]:
    sim = await make_hss_sim(
        rate_limit=CALLS,
        window=WINDOW,
        retry_after=True,
        run_every=None,
        run_registries=30,
        run_failure_rate=0.3,
    )
    async with httpx.AsyncClient(timeout=10.0) as http:
        running = RunCluster(sim, standin, redis_url, redis, tmp_path / "data", http)
        try:
            yield running
        finally:
            await running.aclose()
    for replica in running.replicas:
        log = replica.stderr
        for secret in (TEST_SK, SECRET, BOT_TOKEN):
            assert secret not in log, f"{replica.name} logged a secret"
        assert "Traceback" not in log, f"{replica.name}:\n{log[-3000:]}"


def in_channel(calls: list[Call], method: str) -> list[Call]:
    return [
        c
        for c in calls
        if c.kind == "api" and c.name == method and c.body.get("channel") == CHANNEL
    ]


def everything(call: Call) -> str:
    return json.dumps(call.body, ensure_ascii=False)


def alerts(calls: list[Call], task_id: str) -> list[Call]:
    """Run alerts posted for ``task_id`` (thread lines are not alerts)."""
    return [
        c
        for c in in_channel(calls, "chat.postMessage")
        if "thread_ts" not in c.body and HEADER.search(everything(c)) and task_id in everything(c)
    ]


def ends(calls: list[Call]) -> list[Call]:
    return [
        c
        for c in in_channel(calls, "chat.postMessage")
        if c.body.get("thread_ts") and "Run ended" in c.body.get("text", "")
    ]


async def test_two_replicas_alert_a_run_once_and_a_killed_lease_holder_is_taken_over(
    cluster: RunCluster,
) -> None:
    sim, standin, redis = cluster.sim, cluster.standin, cluster.redis
    sim.sim.start_run("auto", duration=0.0)  # the previous run: before the watch, the baseline
    one, two = await cluster.start(2)
    reply = await cluster.user(one).command_text("watch runs auto")
    assert reply.status == 200 and reply.elapsed < 3.0
    assert "Following" in everything_of(reply.body), reply.body

    started = await cluster.http.post(
        f"{sim.url}/_sim/run", json={"kind": "auto", "duration": RUN_SECONDS}
    )
    run_id = started.json()["run"]["task_id"]
    ref = TaskRef(TEST_PROJECT_ID, run_id)

    def running() -> bool:
        [listed] = [r for r in sim.sim.listed_runs() if r["task_id"] == run_id]
        return bool(0 <= listed["task_status"] < 100)

    # The first failure is alerted once, by whichever replica's round saw it.
    [alert] = alerts(await standin.wait_for(lambda cs: bool(alerts(cs, run_id)), WAIT), run_id)
    assert "still failing" in everything(alert) or "*new*" in everything(alert)
    assert running(), "the run ended before the replicas were put to the test"

    # Slow answers hold a round (and the follower's lease) open: the replica with a call in
    # flight through its door is the one holding it.
    sim.sim.set_faults(latency_ms=1500)
    lease = keys.runs_follower_lease()

    async def holder_found() -> bool:
        inside = [r for r in (one, two) if cluster.doors[r.name].in_flight]
        return len(inside) == 1 and bool(await redis.exists(lease))

    await until(holder_found, timeout=WAIT, what="a round in flight")
    [doomed] = [r for r in (one, two) if cluster.doors[r.name].in_flight]
    [survivor] = [r for r in (one, two) if r is not doomed]
    assert await doomed.stop(signal.SIGKILL) == -signal.SIGKILL
    sim.sim.set_faults(latency_ms=0)
    assert running(), "the kill came after the run's end"

    # The survivor follows the run to its end and says it once, in the alert's thread.
    calls = await standin.wait_for(lambda cs: bool(ends(cs)), WAIT)
    [end] = ends(calls)
    assert end.body["thread_ts"] == alert.answer["ts"]
    assert f"run {run_id}" in survivor.stderr and "thread end" in survivor.stderr

    async def settled() -> bool:
        seen = await read_seen(redis, keys.run_follow(ref))
        return seen is not None and seen.done and not await redis.xlen(keys.outbox(CHANNEL))

    await until(settled, timeout=WAIT, what="the run told in full")
    rounds = await redis.get(keys.runs_follow_round())
    await until(
        lambda: _moved(redis, rounds), timeout=WAIT, what="another round after the run's end"
    )
    calls = standin.api("chat.postMessage")
    assert len(alerts(calls, run_id)) == 1
    assert len(ends(calls)) == 1
    assert survivor.proc.returncode is None

    # Both APIs spent through their budgets, and HSS never refused one for the rate.
    scraped = (await cluster.http.get(f"{survivor.url}/metrics")).text
    for api in ("tasks", "registries"):
        assert metric(scraped, "hss_sync_hss_calls_total", api=api, status="200") > 0, api
        assert metric(scraped, "hss_sync_hss_calls_total", api=api, status="429") == 0, api
        assert metric(scraped, "hss_sync_budget_wait_seconds_count", api=api) > 0, api
    assert sim.sim.throttled == 0


async def _moved(redis: aioredis.Redis, before: bytes | None) -> bool:
    return await redis.get(keys.runs_follow_round()) not in (None, before)


def everything_of(body: object) -> str:
    return json.dumps(body, ensure_ascii=False)
