"""A whole local deployment in one process: embedded Redis (or a given one), the HSS
simulator, the Slack stand-in and the bot over HTTP, plus a signed-request Slack user.
The demo plays on it and the end-to-end tests drive it."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bot.alerting.pipeline import TASKS_EVERY
from bot.config import Settings
from bot.kept_questions import RetryPlan
from bot.ops.server import build_web_app, start_http, web_client
from bot.ops.workers import Workers, build_workers
from bot.runtime import Runtime, open_runtime
from bot.sandbox.sim_server import start_simulator
from bot.sandbox.simulator import SimConfig, Simulator
from bot.sandbox.slack_requests import SlackUser
from bot.sandbox.slack_standin import Channel, SlackStandIn
from bot.slack.app import MAX_WAIT, SlackBot, build_app
from bot.storage.embedded import EmbeddedRedis

SIGNING_SECRET = "demo-signing-secret"  # noqa: S105 (a local demo value, not a credential)


@dataclass
class Stack:
    """Every running part of a local deployment."""

    sim: Simulator
    standin: SlackStandIn
    runtime: Runtime
    user: SlackUser
    #: The scheduler, alert pipeline and outbox sender, when started with ``watches=True``.
    workers: Workers | None = None
    #: The Bolt app and its handlers, as served.
    slack: SlackBot | None = None


@asynccontextmanager
async def local_stack(
    *,
    sim_config: SimConfig,
    env: dict[str, str] | None = None,
    redis_url: str | None = None,
    max_wait: float = MAX_WAIT,
    watches: bool = False,
    send_interval: float = 1.0,
    tasks_every: float = TASKS_EVERY,
    channels: Sequence[Channel] = (),
    retry_plan: RetryPlan | None = None,
    tune: Callable[[Settings], Settings] | None = None,
) -> AsyncIterator[Stack]:
    """Redis (embedded unless ``redis_url``) + simulator + Slack stand-in + the bot over
    HTTP, all torn down after. ``env`` overrides the bot's settings; ``channels`` are named
    in the stand-in, and the user's ``#name`` in command text becomes Slack's reference.
    ``send_interval`` and ``tasks_every`` go to ``build_workers``; ``retry_plan`` (when kept
    questions are tried again) to ``build_app``. ``tune`` changes the settings read from the
    environment, past its checks: the benchmarks compress time below their minimums."""
    async with AsyncExitStack() as stack:
        if redis_url is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hss-demo-")))
            redis_server = EmbeddedRedis(data_dir=tmp / "redis", persistent=False)
            await asyncio.to_thread(redis_server.start)
            stack.push_async_callback(asyncio.to_thread, redis_server.stop)
            redis_url = redis_server.url
        sim = Simulator(sim_config)
        sim_runner, sim_url = await start_simulator(sim)
        stack.push_async_callback(sim_runner.cleanup)
        standin = SlackStandIn(channels)
        await standin.start()
        stack.push_async_callback(standin.stop)
        settings = Settings.from_env(
            {
                "SLACK_BOT_TOKEN": "xoxb-demo",
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": f"{standin.url}/api/",
                "CLOUD_SDK_AK": sim_config.ak,
                "CLOUD_SDK_SK": sim_config.sk,
                "HSS_PROJECT_ID": sim_config.project_id,
                "HSS_ENDPOINT": sim_url,
                "REDIS_URL": redis_url,
                **(env or {}),
            }
        )
        if tune is not None:
            settings = tune(settings)
        runtime = await open_runtime(settings)
        stack.push_async_callback(runtime.aclose)
        workers = (
            build_workers(runtime, settings, min_interval=send_interval, tasks_every=tasks_every)
            if watches
            else None
        )
        if workers is not None:
            workers.start()
            stack.push_async_callback(workers.aclose)
        slack = build_app(
            lookups=runtime.lookups,
            web_client=web_client(settings),
            signing_secret=SIGNING_SECRET,
            command_name=settings.command_name,
            max_wait=max_wait,
            watch_commands=workers.commands if workers else None,
            alert_buttons=workers.buttons if workers else None,
            retry_plan=retry_plan,
            runs=runtime.runs,
        )
        stack.push_async_callback(slack.aclose)
        runner, port = await start_http(build_web_app(slack.app, runtime), host="127.0.0.1", port=0)
        stack.push_async_callback(runner.cleanup)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30.0))
        user = SlackUser(
            bot_url=f"http://127.0.0.1:{port}",
            signing_secret=SIGNING_SECRET,
            response_base=f"{standin.url}/response",
            http=http,
            command=settings.command_name,
            channels={c.name: c.id for c in channels},
        )
        yield Stack(
            sim=sim, standin=standin, runtime=runtime, user=user, workers=workers, slack=slack
        )
