"""``/metrics``: fetched over HTTP from the bot's web app and parsed with Prometheus's own
parser, after real lookups (signed slash commands into Bolt, the HSS simulator, a real
Redis), a real flip alerted through the outbox past a Slack 429, and a Redis outage.

Counters are per process and other tests move them too: tests compare before and after."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Settings
from bot.models import TaskRef
from bot.ops import metrics
from bot.ops.gauges import Live, render
from bot.ops.metrics import hss_status_label
from bot.ops.server import build_web_app, start_http, web_client
from bot.runs import RunFilter
from bot.runtime import Runtime, open_runtime
from bot.sandbox.localstack import Stack
from bot.sandbox.slack_requests import SlackUser
from bot.sandbox.slack_standin import Scripted, SlackStandIn
from bot.slack.app import build_app
from bot.storage.embedded import EmbeddedRedis
from bot.storage.watch_store import WatchStore
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, MakeSim
from tests.support import alerting_stack

SIGNING = "logs-test-signing-secret"
BOT_TOKEN = "xoxb-logs-test-token"
TASK = "task-metrics"

FAMILIES = {
    "hss_sync_lookups": "counter",
    "hss_sync_ack_seconds": "histogram",
    "hss_sync_hss_calls": "counter",
    "hss_sync_budget_wait_seconds": "histogram",
    "hss_sync_budget_calls_left": "gauge",
    "hss_sync_mirror_age_seconds": "gauge",
    "hss_sync_flips": "counter",
    "hss_sync_alerts": "counter",
    "hss_sync_outbox_depth": "gauge",
    "hss_sync_outbox_parked_channels": "gauge",
    "hss_sync_slack_429": "counter",
    "hss_sync_redis_up": "gauge",
}


# --- reading the text ----------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    text: str

    def families(self) -> dict[str, str]:
        return {f.name: f.type for f in text_string_to_metric_families(self.text)}

    def value(self, sample: str, **labels: str) -> float | None:
        """The value of the sample with exactly these labels (None: absent)."""
        for family in text_string_to_metric_families(self.text):
            for s in family.samples:
                if s.name == sample and s.labels == labels:
                    return float(s.value)
        return None

    def count(self, sample: str, **labels: str) -> float:
        """A counter-like sample, absent counted as 0."""
        return self.value(sample, **labels) or 0.0

    def labels_of(self, sample: str) -> list[dict[str, str]]:
        return [
            s.labels
            for f in text_string_to_metric_families(self.text)
            for s in f.samples
            if s.name == sample
        ]


async def scrape(base_url: str) -> Scrape:
    async with httpx.AsyncClient(timeout=10.0) as http:
        response = await http.get(f"{base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


# --- a bot over HTTP -----------------------------------------------------------------------


@dataclass
class Bot:
    runtime: Runtime
    user: SlackUser
    standin: SlackStandIn
    url: str


MakeBot = Callable[..., Awaitable[Bot]]


@pytest.fixture
async def make_bot(make_hss_sim: MakeSim) -> AsyncIterator[MakeBot]:
    """``await make_bot(redis_url)``: the Bolt app and the web app of ``run`` (HTTP mode)."""
    async with AsyncExitStack() as exits:

        async def make(redis_url: str) -> Bot:
            sim = await make_hss_sim(task_sizes={TASK: 30, "never-fetched": 10})
            standin = SlackStandIn()
            await standin.start()
            exits.push_async_callback(standin.stop)
            settings = Settings.from_env(
                {
                    "SLACK_BOT_TOKEN": BOT_TOKEN,
                    "SLACK_SIGNING_SECRET": SIGNING,
                    "SLACK_API_URL": f"{standin.url}/api/",
                    "CLOUD_SDK_AK": TEST_AK,
                    "CLOUD_SDK_SK": TEST_SK,
                    "HSS_PROJECT_ID": TEST_PROJECT_ID,
                    "HSS_ENDPOINT": sim.url,
                    "REDIS_URL": redis_url,
                }
            )
            runtime = await open_runtime(settings)
            exits.push_async_callback(runtime.aclose)
            slack = build_app(
                lookups=runtime.lookups,
                web_client=web_client(settings),
                signing_secret=SIGNING,
                command_name=settings.command_name,
            )
            exits.push_async_callback(slack.aclose)
            runner, port = await start_http(
                build_web_app(slack.app, runtime), host="127.0.0.1", port=0
            )
            exits.push_async_callback(runner.cleanup)
            http = await exits.enter_async_context(httpx.AsyncClient(timeout=30.0))
            url = f"http://127.0.0.1:{port}"
            user = SlackUser(
                bot_url=url,
                signing_secret=SIGNING,
                response_base=f"{standin.url}/response",
                http=http,
            )
            return Bot(runtime=runtime, user=user, standin=standin, url=url)

        yield make


async def answered(bot: Bot, text: str) -> None:
    """Send a command and wait for its answer: in the ack, or through response_url."""
    reply = await bot.user.command_text(text)
    assert reply.status == 200
    if "Fetching" in str(reply.body):
        await bot.standin.wait_for(lambda cs: any(c.name == reply.response_id for c in cs))


async def test_metrics_count_a_real_lookup(
    make_bot: MakeBot, redis: aioredis.Redis, redis_url: str
) -> None:
    bot = await make_bot(redis_url)
    watches = WatchStore(redis)
    for task in (TASK, "never-fetched"):
        ref = TaskRef(project_id=TEST_PROJECT_ID, task_id=task)
        await watches.add(task=ref, channel="C0METRICS1", created_by="U0METRICS1")
    before = await scrape(bot.url)

    await answered(bot, f"{TASK} failed")  # cold: fetched through the budget
    after = await scrape(bot.url)
    await answered(bot, f"{TASK} running")  # fresh: from the mirror, no call
    again = await scrape(bot.url)

    assert after.families() == {**after.families(), **FAMILIES}  # every family, right type
    assert all(name.startswith("hss_sync_") for name in after.families())
    lookups = "hss_sync_lookups_total"
    assert (
        after.count(lookups, outcome="refreshed") == before.count(lookups, outcome="refreshed") + 1
    )
    assert again.count(lookups, outcome="fresh") == after.count(lookups, outcome="fresh") + 1
    calls = "hss_sync_hss_calls_total"
    ok = {"api": "registries", "status": "200"}
    assert after.count(calls, **ok) == before.count(calls, **ok) + 1
    assert again.count(calls, **ok) == after.count(calls, **ok)  # no call
    acks = "hss_sync_ack_seconds_count"
    assert again.count(acks, kind="command") == before.count(acks, kind="command") + 2
    waits = "hss_sync_budget_wait_seconds_count"
    people = {"api": "registries", "priority": "interactive"}
    assert after.count(waits, **people) == before.count(waits, **people) + 1
    age = after.value("hss_sync_mirror_age_seconds", task=TASK)
    assert age is not None and 0.0 <= age < 30.0
    assert after.value("hss_sync_mirror_age_seconds", task="never-fetched") == math.inf
    for api in metrics.APIS:
        assert after.value("hss_sync_budget_calls_left", api=api) is not None
    assert after.value("hss_sync_outbox_depth") == 0.0
    assert after.value("hss_sync_redis_up") == 1.0

    # Unwatched, a task's series goes: the label set stays as small as the watch list.
    await watches.remove(
        task=TaskRef(project_id=TEST_PROJECT_ID, task_id=TASK), channel="C0METRICS1"
    )
    tasks = [
        labels["task"]
        for labels in (await scrape(bot.url)).labels_of("hss_sync_mirror_age_seconds")
    ]
    assert tasks == ["never-fetched"]


async def test_metrics_say_which_api_each_call_and_wait_belonged_to(
    make_bot: MakeBot, redis: aioredis.Redis, redis_url: str
) -> None:
    bot = await make_bot(redis_url)
    before = await scrape(bot.url)
    await bot.runtime.client.fetch_runs(RunFilter())  # one page: the simulator's few runs
    await answered(bot, f"{TASK} failed")
    after = await scrape(bot.url)

    calls, waits = "hss_sync_hss_calls_total", "hss_sync_budget_wait_seconds_count"
    for api in metrics.APIS:
        ok = {"api": api, "status": "200"}
        assert after.count(calls, **ok) == before.count(calls, **ok) + 1, api
        people = {"api": api, "priority": "interactive"}
        assert after.count(waits, **people) == before.count(waits, **people) + 1, api
    # Each budget spent one call of its own five (the runtime pads the window, not the count).
    assert after.value("hss_sync_budget_calls_left", api="registries") == 4.0
    assert after.value("hss_sync_budget_calls_left", api="tasks") == 4.0


def test_label_values_of_each_api_are_known_before_their_first_event() -> None:
    text = Scrape(render(Live(redis_up=True)).decode())
    for api in metrics.APIS:
        for priority in metrics.PRIORITIES:
            labels = {"api": api, "priority": priority}
            assert text.value("hss_sync_budget_wait_seconds_count", **labels) is not None
        assert text.value("hss_sync_hss_calls_total", api=api, status="429") is not None


async def test_metrics_during_a_redis_outage(
    make_bot: MakeBot, redis_server: EmbeddedRedis
) -> None:
    bot = await make_bot(redis_server.url)
    await asyncio.to_thread(redis_server.stop)
    try:
        down = await scrape(bot.url)
    finally:
        await asyncio.to_thread(redis_server.start)
    assert down.value("hss_sync_redis_up") == 0.0
    # Each budget's in-process fallback still knows how many calls are left.
    for api in metrics.APIS:
        assert down.value("hss_sync_budget_calls_left", api=api) is not None
    assert down.value("hss_sync_outbox_depth") is None
    assert down.labels_of("hss_sync_mirror_age_seconds") == []


# --- a flip alerted through the outbox, past a Slack 429 -----------------------------------


@pytest.fixture
async def alert_stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[Stack]:
    async with alerting_stack(redis_url, TASK) as running:
        yield running


async def metrics_url(stack: Stack, exits: AsyncExitStack) -> str:
    """The stack's runtime behind a web app of our own: Socket Mode's, /slack/events aside."""
    runner, port = await start_http(build_web_app(None, stack.runtime), host="127.0.0.1", port=0)
    exits.push_async_callback(runner.cleanup)
    return f"http://127.0.0.1:{port}"


async def until(url: str, ok: Callable[[Scrape], bool], timeout: float = 15.0) -> Scrape:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await scrape(url)
        if ok(got) or loop.time() > deadline:
            return got
        await asyncio.sleep(0.1)


async def test_flips_alerts_and_slack_429s_are_counted(alert_stack: Stack) -> None:
    stack = alert_stack
    async with AsyncExitStack() as exits:
        url = await metrics_url(stack, exits)
        before = await scrape(url)
        reply = await stack.user.command_text(f"watch {TASK}")
        assert "Watching task" in str(reply.body)

        def refreshed(s: Scrape) -> bool:
            return (s.value("hss_sync_mirror_age_seconds", task=TASK) or math.inf) < math.inf

        assert refreshed(await until(url, refreshed)), "the scheduler's baseline refresh"
        stack.standin.fail_next(
            "chat.postMessage",
            Scripted(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "0"}),
        )
        victim = next(r for r in stack.sim.registries(TASK) if r.sync_status == "finished")
        stack.sim.set_status(TASK, victim.registry_id, "failed", "disk full")

        def sent(s: Scrape) -> bool:
            return s.count("hss_sync_alerts_total", result="sent") > before.count(
                "hss_sync_alerts_total", result="sent"
            )

        after = await until(url, sent)

    assert sent(after)
    flips = "hss_sync_flips_total"
    assert after.count(flips, kind="failure") == before.count(flips, kind="failure") + 1
    alerts = "hss_sync_alerts_total"
    assert after.count(alerts, result="retried") == before.count(alerts, result="retried") + 1
    assert after.count(alerts, result="failed") == before.count(alerts, result="failed")
    assert after.count("hss_sync_slack_429_total") == before.count("hss_sync_slack_429_total") + 1
    assert after.value("hss_sync_outbox_depth") == 0.0


# --- pure ------------------------------------------------------------------------------------


def test_scrape_time_gauges_render_and_parse() -> None:
    live = Live(
        redis_up=True,
        calls_left={"registries": 3, "tasks": 5},
        outbox_depth=7,
        parked_channels=1,
        mirror_ages={"b": 12.5, "a": math.inf},
    )
    text = Scrape(render(live).decode())
    assert text.value("hss_sync_budget_calls_left", api="registries") == 3.0
    assert text.value("hss_sync_budget_calls_left", api="tasks") == 5.0
    assert text.value("hss_sync_outbox_depth") == 7.0
    assert text.value("hss_sync_outbox_parked_channels") == 1.0
    assert text.value("hss_sync_mirror_age_seconds", task="b") == 12.5
    assert text.value("hss_sync_mirror_age_seconds", task="a") == math.inf
    # Each scrape is built afresh: nothing of an earlier one lingers.
    later = Scrape(render(Live(redis_up=True, mirror_ages={"c": 1.0})).decode())
    assert later.labels_of("hss_sync_mirror_age_seconds") == [{"task": "c"}]


def test_every_family_has_help_text() -> None:
    live = Live(redis_up=True, calls_left={"registries": 1}, outbox_depth=0, parked_channels=0)
    text = render(live).decode()
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name


@pytest.mark.parametrize(
    ("status", "code", "label"),
    [
        (200, "", "200"),
        (429, "APIGW.0308", "429"),
        (None, "TIMEOUT", "timeout"),
        (None, "NETWORK", "network"),
        (None, "CANCELLED", "cancelled"),
        (None, "", "error"),
    ],
)
def test_hss_call_status_labels(status: int | None, code: str, label: str) -> None:
    assert hss_status_label(status, code) == label


def test_label_values_are_known_before_their_first_event() -> None:
    text = Scrape(render(Live(redis_up=True)).decode())
    for outcome in metrics.LOOKUP_OUTCOMES:
        assert text.value("hss_sync_lookups_total", outcome=outcome) is not None
    for result in metrics.ALERT_RESULTS:
        assert text.value("hss_sync_alerts_total", result=result) is not None
